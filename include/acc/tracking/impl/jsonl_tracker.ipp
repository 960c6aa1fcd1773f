#pragma once

#include <acc/tracking/jsonl_tracker.hpp>
#include <acc/tracking/run_files.hpp>

#include <nlohmann/json.hpp>

#include <utility>
#include <variant>

namespace acc {

namespace detail {
// The values as members of `object`, in their order.
inline nlohmann::ordered_json with_tracked_values(const TrackedValues& values, nlohmann::ordered_json object) {
  for (const auto& [key, value] : values)
    std::visit([&, &key = key](const auto& v) { object[key] = v; }, value.storage());
  return object;
}
}  // namespace detail

ACC_DECL JsonlTracker::JsonlTracker(const std::filesystem::path& run_dir)
    : dir_(detail::create_run_directory(run_dir)), file_(detail::open_run_file(metrics_path())) {}

ACC_DECL void JsonlTracker::store_init_configuration(const TrackedValues& config) {
  auto file = detail::open_run_file(config_path());
  file << detail::with_tracked_values(config, nlohmann::ordered_json::object()).dump(2) << "\n";
  file.flush();
  detail::check_written(file, config_path());
}

ACC_DECL void JsonlTracker::log(const TrackedValues& values, std::optional<int64_t> step) {
  nlohmann::ordered_json line;
  line["_step"] = step ? nlohmann::ordered_json(*step) : nlohmann::ordered_json(nullptr);
  line["_timestamp"] = detail::unix_seconds();
  file_ << detail::with_tracked_values(values, std::move(line)).dump() << "\n";
  file_.flush();
  detail::check_written(file_, metrics_path());
}

}  // namespace acc
