#pragma once

#include <acc/error.hpp>
#include <acc/tracking/trackers.hpp>

#include <utility>

namespace acc {

namespace detail {
ACC_DECL std::string tracker_names_text() {
  std::string text = "all";
  for (const auto& name : kTrackerNames) text += ", " + name;
  return text;
}
}  // namespace detail

ACC_DECL void Trackers::add(std::shared_ptr<Tracker> tracker) {
  if (!tracker) throw Error("Trackers::add was given no tracker (a null pointer)");
  custom_.push_back(std::move(tracker));
}

ACC_DECL void Trackers::log(const TrackedValues& values, std::optional<int64_t> step) {
  if (state_ != State::started && (!names_.empty() || !custom_.empty()))
    throw Error(state_ == State::not_started
                    ? "log() before init_trackers(): call accelerator.init_trackers(project_name) first"
                    : "log() after end_training(): the trackers are closed");
  for (const auto& tracker : active_) tracker->log(values, step);
}

ACC_DECL void Trackers::finish() {
  for (const auto& tracker : active_) tracker->finish();
  active_.clear();
  if (state_ == State::started) state_ = State::finished;
}

ACC_DECL Tracker* Trackers::get(std::string_view name) const {
  for (const auto& tracker : active_)
    if (tracker->name() == name) return tracker.get();
  return nullptr;
}

}  // namespace acc

namespace acc::detail {

ACC_DECL std::vector<std::string> resolve_tracker_names(const std::vector<std::string>& log_with) {
  std::vector<std::string> names;
  const auto add = [&](const std::string& name) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  };
  for (const auto& name : log_with) {
    if (name == "all") {
      for (const auto& known : kTrackerNames)
        if (tracker_built(known)) add(known);
    } else if (std::find(kTrackerNames.begin(), kTrackerNames.end(), name) == kTrackerNames.end()) {
      throw Error("log_with names an unknown tracker '" + name + "'; allowed values: " + tracker_names_text());
    } else if (!tracker_built(name)) {
      throw Error(
          "log_with names 'tensorboard' but this program was built without the TensorBoard tracker; link it "
          "with acc::tensorboard (CMake builds that target where it finds Protobuf: install libprotobuf-dev "
          "and protobuf-compiler), or log with jsonl or csv");
    } else {
      add(name);
    }
  }
  return names;
}

}  // namespace acc::detail
