#include "rank_logs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace acc::cli {

RankLogs::~RankLogs() {
  for (File& file : files_)
    if (file.fd >= 0) close(file.fd);
}

std::optional<std::string> RankLogs::open(const std::string& dir, int first_rank, int count) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return "cannot create the directory: " + error.message();
  for (int rank = first_rank; rank < first_rank + count; ++rank)
    for (const char* stream : {"stdout", "stderr"}) {
      File file;
      file.path = (std::filesystem::path(dir) / ("rank_" + std::to_string(rank) + "." + stream)).string();
      // O_APPEND: what a restart writes goes after what the earlier starts wrote.
      file.fd = ::open(file.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
      if (file.fd < 0) return "cannot write " + file.path + ": " + std::strerror(errno);
      files_.push_back(std::move(file));
    }
  return std::nullopt;
}

void RankLogs::append_to_all(const std::string& line) {
  for (const File& file : files_) append_all(file.fd, line.data(), line.size());
}

int append_all(int fd, const char* text, std::size_t size) {
  while (size > 0) {
    const ssize_t written = write(fd, text, size);
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) return errno;
    if (written == 0) return EIO;
    text += written;
    size -= static_cast<std::size_t>(written);
  }
  return 0;
}

}  // namespace acc::cli
