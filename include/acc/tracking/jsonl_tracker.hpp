// acc::JsonlTracker ("jsonl"): logging_dir/project_name/metrics.jsonl, one JSON object per log()
// call, `{"_step": 3, "_timestamp": 1767000000.25, "loss": 2.5}` (`_step` is null without a
// step; a NaN or infinite number is null, as JSON has none), flushed at once so that the file is
// readable while training runs (pandas.read_json(path, lines=True)); the configuration goes to
// config.json beside it.
#pragma once

#include <acc/detail/run_files.hpp>
#include <acc/tracking/tracker.hpp>
#include <acc/tracking/value.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <variant>

namespace acc {

class JsonlTracker : public Tracker {
 public:
  explicit JsonlTracker(const std::filesystem::path& run_dir)
      : dir_(detail::create_run_directory(run_dir)), file_(detail::open_run_file(metrics_path())) {}

  std::filesystem::path metrics_path() const { return dir_ / "metrics.jsonl"; }
  std::filesystem::path config_path() const { return dir_ / "config.json"; }

  std::string name() const override { return "jsonl"; }

  void store_init_configuration(const TrackedValues& config) override {
    auto file = detail::open_run_file(config_path());
    file << to_json(config, nlohmann::ordered_json::object()).dump(2) << "\n";
    file.flush();
    detail::check_written(file, config_path());
  }

  void log(const TrackedValues& values, std::optional<int64_t> step) override {
    nlohmann::ordered_json line;
    line["_step"] = step ? nlohmann::ordered_json(*step) : nlohmann::ordered_json(nullptr);
    line["_timestamp"] = detail::unix_seconds();
    file_ << to_json(values, std::move(line)).dump() << "\n";
    file_.flush();
    detail::check_written(file_, metrics_path());
  }

  void finish() override { file_.close(); }

 private:
  static nlohmann::ordered_json to_json(const TrackedValues& values, nlohmann::ordered_json object) {
    for (const auto& [key, value] : values)
      std::visit([&, &key = key](const auto& v) { object[key] = v; }, value.storage());
    return object;
  }

  std::filesystem::path dir_;
  std::ofstream file_;
};

}  // namespace acc
