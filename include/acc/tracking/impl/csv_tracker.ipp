#pragma once

#include <acc/detail/files.hpp>
#include <acc/error.hpp>
#include <acc/tracking/csv_tracker.hpp>
#include <acc/tracking/run_files.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace acc {

namespace detail {
ACC_DECL std::string csv_cell(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

ACC_DECL std::string csv_row(const std::vector<std::string>& cells) {
  std::string row;
  for (std::size_t i = 0; i < cells.size(); ++i) row += (i ? "," : "") + csv_cell(cells[i]);
  return row + "\n";
}
}  // namespace detail

ACC_DECL CsvTracker::CsvTracker(const std::filesystem::path& run_dir)
    : dir_(detail::create_run_directory(run_dir)), columns_{"step", "timestamp"} {
  rewrite();
}

ACC_DECL void CsvTracker::store_init_configuration(const TrackedValues& config) {
  std::string text = detail::csv_row({"key", "value"});
  for (const auto& [key, value] : config) text += detail::csv_row({key, value.text()});
  detail::write_synced(config_path(), text);
}

ACC_DECL void CsvTracker::log(const TrackedValues& values, std::optional<int64_t> step) {
  const auto columns_before = columns_.size();
  for (const auto& entry : values)
    if (std::find(columns_.begin(), columns_.end(), entry.first) == columns_.end()) columns_.push_back(entry.first);
  std::vector<std::string> row(columns_.size());
  row[0] = step ? std::to_string(*step) : "";
  row[1] = detail::decimal_text(detail::unix_seconds());
  for (const auto& [key, value] : values)
    row[static_cast<std::size_t>(std::find(columns_.begin(), columns_.end(), key) - columns_.begin())] = value.text();
  rows_.push_back(std::move(row));
  if (columns_.size() != columns_before) return rewrite();
  file_ << detail::csv_row(rows_.back());
  file_.flush();
  detail::check_written(file_, metrics_path());
}

ACC_DECL void CsvTracker::rewrite() {
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

}  // namespace acc
