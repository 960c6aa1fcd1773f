// acc::CsvTracker ("csv"): logging_dir/project_name/metrics.csv with the columns step, timestamp
// and every key logged, in the order first seen; a row per log() call, flushed at once. A key
// that appears later adds a column: the file is rewritten (atomically) with the wider header,
// earlier rows leaving that cell empty. The configuration goes to config.csv (key,value).
#pragma once

#include <acc/detail/files.hpp>
#include <acc/detail/run_files.hpp>
#include <acc/tracking/tracker.hpp>
#include <acc/tracking/value.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace acc {

namespace detail {
// A CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line break.
inline std::string csv_cell(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

inline std::string csv_row(const std::vector<std::string>& cells) {
  std::string row;
  for (std::size_t i = 0; i < cells.size(); ++i) row += (i ? "," : "") + csv_cell(cells[i]);
  return row + "\n";
}
}  // namespace detail

class CsvTracker : public Tracker {
 public:
  explicit CsvTracker(const std::filesystem::path& run_dir)
      : dir_(detail::create_run_directory(run_dir)), columns_{"step", "timestamp"} {
    rewrite();
  }

  std::filesystem::path metrics_path() const { return dir_ / "metrics.csv"; }
  std::filesystem::path config_path() const { return dir_ / "config.csv"; }

  std::string name() const override { return "csv"; }

  void store_init_configuration(const TrackedValues& config) override {
    std::string text = detail::csv_row({"key", "value"});
    for (const auto& [key, value] : config) text += detail::csv_row({key, value.text()});
    detail::write_synced(config_path(), text);
  }

  void log(const TrackedValues& values, std::optional<int64_t> step) override {
    const auto columns_before = columns_.size();
    for (const auto& entry : values)
      if (std::find(columns_.begin(), columns_.end(), entry.first) == columns_.end()) columns_.push_back(entry.first);
    std::vector<std::string> row(columns_.size());
    row[0] = step ? std::to_string(*step) : "";
    row[1] = TrackedValue(detail::unix_seconds()).text();
    for (const auto& [key, value] : values)
      row[static_cast<std::size_t>(std::find(columns_.begin(), columns_.end(), key) - columns_.begin())] = value.text();
    rows_.push_back(std::move(row));
    if (columns_.size() != columns_before) return rewrite();
    file_ << detail::csv_row(rows_.back());
    file_.flush();
    detail::check_written(file_, metrics_path());
  }

  void finish() override { file_.close(); }

 private:
  // The whole file with the current columns, swapped into place, then reopened for appending.
  void rewrite() {
    std::string text = detail::csv_row(columns_);
    for (auto row : rows_) {
      row.resize(columns_.size());
      text += detail::csv_row(row);
    }
    const auto staged = metrics_path().string() + ".tmp";
    detail::write_synced(staged, text);
    if (std::rename(staged.c_str(), metrics_path().c_str()) != 0)
      throw Error("cannot rename '" + staged + "' to '" + metrics_path().string() +
                  "': " + detail::system_error_text(errno));
    file_.close();
    file_ = detail::open_run_file(metrics_path(), /*append=*/true);
  }

  std::filesystem::path dir_;
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
  std::ofstream file_;
};

}  // namespace acc
