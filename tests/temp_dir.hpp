// Helpers of the tests that write files: a fresh temporary directory, a file's bytes read and
// written, and writes that fail as on a full disk.
#pragma once

#include <acc/detail/files.hpp>

#include <sys/resource.h>
#include <unistd.h>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

// A fresh directory under the system's temporary directory, removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "acc_test") {
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    acc::detail::remove_tree(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { acc::detail::remove_tree(path); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_text(const std::filesystem::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
}

// While it lives, this process writes no file beyond `bytes` (RLIMIT_FSIZE): such writes fail with
// EFBIG (SIGXFSZ ignored), as they fail with ENOSPC on a full disk; no privilege or small file
// system needed.
struct FileSizeLimit {
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &before);
    handler = std::signal(SIGXFSZ, SIG_IGN);
    auto limit = before;
    limit.rlim_cur = bytes;
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) throw std::runtime_error("setrlimit(RLIMIT_FSIZE) failed");
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &before);
    std::signal(SIGXFSZ, handler);
  }
  struct rlimit before {};
  void (*handler)(int) = nullptr;
};
