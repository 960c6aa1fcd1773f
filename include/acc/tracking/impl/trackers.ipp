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
