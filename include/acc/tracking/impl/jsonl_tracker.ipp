#pragma once

#include <acc/tracking/jsonl_tracker.hpp>
#include <acc/tracking/run_files.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <string>
#include <variant>

namespace acc {

namespace detail {
// A value as JSON: a number in the text TrackedValue::text() gives it, the CSV tracker's, so that one
// figure reads the same in every file (a NaN or infinite number is null: JSON has none).
inline std::string json_text(const TrackedValue& value) {
  if (value.is_string()) return nlohmann::json(std::get<std::string>(value.storage())).dump();
  if (const auto* real = std::get_if<double>(&value.storage()); real && !std::isfinite(*real)) return "null";
  return value.text();
}

// {"key": value, ...} after the members already in `object` (its text without the closing brace);
// with `indent`, one member per line.
inline std::string json_object(std::string object, const TrackedValues& values, bool indent) {
  for (const auto& [key, value] : values) {
    if (object.size() > 1) object += ",";
    object += (indent ? "\n  " : "") + nlohmann::json(key).dump() + (indent ? ": " : ":") + json_text(value);
  }
  return object + (indent && object.size() > 1 ? "\n}" : "}");
}
}  // namespace detail

ACC_DECL JsonlTracker::JsonlTracker(const std::filesystem::path& run_dir)
    : dir_(detail::create_run_directory(run_dir)), file_(detail::open_run_file(metrics_path())) {}

ACC_DECL void JsonlTracker::store_init_configuration(const TrackedValues& config) {
  auto file = detail::open_run_file(config_path());
  file << detail::json_object("{", config, /*indent=*/true) << "\n";
  file.flush();
  detail::check_written(file, config_path());
}

ACC_DECL void JsonlTracker::log(const TrackedValues& values, std::optional<int64_t> step) {
  const std::string head = "{\"_step\":" + (step ? std::to_string(*step) : std::string("null")) +
                           ",\"_timestamp\":" + detail::decimal_text(detail::unix_seconds());
  file_ << detail::json_object(head, values, /*indent=*/false) << "\n";
  file_.flush();
  detail::check_written(file_, metrics_path());
}

}  // namespace acc
