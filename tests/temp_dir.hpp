// Helpers of the tests that write files: a fresh temporary directory, a file's bytes read and written.
#pragma once

#include <acc/detail/files.hpp>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <iterator>
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
