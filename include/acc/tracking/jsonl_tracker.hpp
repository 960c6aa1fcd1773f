// acc::JsonlTracker ("jsonl"): logging_dir/project_name/metrics.jsonl, one JSON object per log()
// call, `{"_step": 3, "_timestamp": 1767000000.25, "loss": 2.5}` (`_step` is null without a
// step; a NaN or infinite number is null, as JSON has none), flushed at once so that the file is
// readable while training runs (pandas.read_json(path, lines=True)); the configuration goes to
// config.json beside it.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/tracking/tracker.hpp>
#include <acc/tracking/value.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace acc {

class JsonlTracker : public Tracker {
 public:
  explicit JsonlTracker(const std::filesystem::path& run_dir);

  std::filesystem::path metrics_path() const { return dir_ / "metrics.jsonl"; }
  std::filesystem::path config_path() const { return dir_ / "config.json"; }

  std::string name() const override { return "jsonl"; }
  void store_init_configuration(const TrackedValues& config) override;
  void log(const TrackedValues& values, std::optional<int64_t> step) override;
  void finish() override { file_.close(); }

 private:
  std::filesystem::path dir_;
  std::ofstream file_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/jsonl_tracker.ipp>
#endif
