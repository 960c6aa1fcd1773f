// acc launch --log_dir: the files that receive a copy of each local rank's stdout and stderr,
// DIR/rank_<global rank>.stdout and .stderr, open for the whole job (every restart appends).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace acc::cli {

class RankLogs {
 public:
  RankLogs() = default;
  ~RankLogs();
  RankLogs(const RankLogs&) = delete;
  RankLogs& operator=(const RankLogs&) = delete;

  // Creates `dir` (and its parents) and creates or empties the files of the global ranks
  // first_rank .. first_rank + count - 1; returns why that failed, naming the path, if it did.
  std::optional<std::string> open(const std::string& dir, int first_rank, int count);

  int stdout_fd(int local_rank) const { return files_[2 * static_cast<std::size_t>(local_rank)].fd; }
  int stderr_fd(int local_rank) const { return files_[2 * static_cast<std::size_t>(local_rank) + 1].fd; }
  const std::string& stdout_path(int local_rank) const { return files_[2 * static_cast<std::size_t>(local_rank)].path; }
  const std::string& stderr_path(int local_rank) const {
    return files_[2 * static_cast<std::size_t>(local_rank) + 1].path;
  }

  // Appends `line` to every file: what separates one start of the ranks from the next.
  void append_to_all(const std::string& line);

 private:
  struct File {
    std::string path;
    int fd = -1;
  };
  std::vector<File> files_;
};

// Appends all of `text` to `fd`; returns errno when a write fails, 0 when all of it was written.
int append_all(int fd, const char* text, std::size_t size);

}  // namespace acc::cli
