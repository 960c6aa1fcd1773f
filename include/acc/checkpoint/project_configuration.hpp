// Where checkpoints go (Python's ProjectConfiguration): with automatic_checkpoint_naming,
// `accelerator.save_state()` writes project_dir/checkpoints/checkpoint_<i> (i one more than the
// largest there) and keeps at most total_limit of them, removing the oldest only once the new
// one is complete; `accelerator.load_state()` loads the newest.
//
//   acc::AcceleratorOptions().project_config(
//       acc::ProjectConfiguration().project_dir("runs/a").automatic_checkpoint_naming(true).total_limit(3))
#pragma once

#include <acc/error.hpp>

#include <torch/arg.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace acc {

class ProjectConfiguration {
 public:
  std::filesystem::path checkpoints_dir() const { return project_dir() / "checkpoints"; }

  // The numbered checkpoints under checkpoints_dir(), oldest first (other entries are ignored,
  // such as a save's temporary directory).
  std::vector<std::filesystem::path> checkpoints() const {
    std::vector<std::filesystem::path> paths;
    for (auto& [number, path] : numbered_checkpoints()) paths.push_back(std::move(path));
    return paths;
  }

  // Where automatic naming puts the next checkpoint.
  std::filesystem::path next_checkpoint() const {
    const auto existing = numbered_checkpoints();
    const auto next = existing.empty() ? 0 : existing.back().first + 1;
    return checkpoints_dir() / ("checkpoint_" + std::to_string(next));
  }

  // The newest checkpoint, for load_state() without a directory.
  std::filesystem::path latest_checkpoint() const {
    const auto existing = checkpoints();
    if (existing.empty())
      throw Error("load_state() without a directory loads the newest checkpoint under '" + checkpoints_dir().string() +
                  "', but there is none");
    return existing.back();
  }

  // The run's directory; automatic naming puts checkpoints under project_dir/checkpoints.
  TORCH_ARG(std::filesystem::path, project_dir) = ".";
  // save_state() without a directory numbers checkpoints under project_dir/checkpoints.
  TORCH_ARG(bool, automatic_checkpoint_naming) = false;
  // With automatic naming, the number of checkpoints kept (0: all).
  TORCH_ARG(int64_t, total_limit) = 0;

 public:
  // Where trackers write (logging_dir/project_name); by default project_dir.
  ProjectConfiguration& logging_dir(std::filesystem::path dir) {
    logging_dir_ = std::move(dir);
    return *this;
  }
  std::filesystem::path logging_dir() const { return logging_dir_.empty() ? project_dir() : logging_dir_; }

 private:
  std::filesystem::path logging_dir_;

  // (private, as TORCH_ARG leaves it)
  std::vector<std::pair<uint64_t, std::filesystem::path>> numbered_checkpoints() const {
    const std::string prefix = "checkpoint_";
    std::vector<std::pair<uint64_t, std::filesystem::path>> numbered;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(checkpoints_dir(), ec)) {
      const auto name = entry.path().filename().string();
      const auto digits = name.substr(std::min(prefix.size(), name.size()));
      if (name.rfind(prefix, 0) != 0 || digits.empty() || digits.size() > 18 ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          !entry.is_directory(ec))
        continue;
      numbered.emplace_back(std::stoull(digits), entry.path());
    }
    std::sort(numbered.begin(), numbered.end());
    return numbered;
  }
};

}  // namespace acc
