// acc::CsvTracker ("csv"): logging_dir/project_name/metrics.csv with the columns step, timestamp
// and every key logged, in the order first seen; a row per log() call, flushed at once. A key
// that appears later adds a column: the file is rewritten (atomically) with the wider header,
// earlier rows leaving that cell empty. The configuration goes to config.csv (key,value).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/tracking/tracker.hpp>
#include <acc/tracking/value.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace acc {

namespace detail {
// A CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line break.
ACC_DECL std::string csv_cell(const std::string& text);
ACC_DECL std::string csv_row(const std::vector<std::string>& cells);
}  // namespace detail

class CsvTracker : public Tracker {
 public:
  explicit CsvTracker(const std::filesystem::path& run_dir);

  std::filesystem::path metrics_path() const { return dir_ / "metrics.csv"; }
  std::filesystem::path config_path() const { return dir_ / "config.csv"; }

  std::string name() const override { return "csv"; }
  void store_init_configuration(const TrackedValues& config) override;
  void log(const TrackedValues& values, std::optional<int64_t> step) override;
  void finish() override { file_.close(); }

 private:
  // The whole file with the current columns, swapped into place, then reopened for appending.
  void rewrite();

  std::filesystem::path dir_;
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
  std::ofstream file_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/csv_tracker.ipp>
#endif
