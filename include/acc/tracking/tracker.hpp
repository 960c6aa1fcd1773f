// acc::Tracker: where an experiment's configuration and metrics go (Python Accelerate's
// GeneralTracker). Built-in ones are chosen by name with AcceleratorOptions().log_with(...):
// "jsonl", "csv", "tensorboard", or "all"; a program may add its own (Trackers::add). Trackers
// are called a few times per step at most, so a virtual interface costs nothing that matters.
#pragma once

#include <acc/tracking/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace acc {

class Tracker {
 public:
  virtual ~Tracker() = default;
  // The name log_with and Accelerator::get_tracker use.
  virtual std::string name() const = 0;
  // The run's hyperparameters, stored once at the start (Accelerator::init_trackers' config).
  virtual void store_init_configuration(const TrackedValues& config) = 0;
  // Values at a step (no step: the tracker's notion of "unspecified", as Python's step=None).
  virtual void log(const TrackedValues& values, std::optional<int64_t> step) = 0;
  // Flushes and closes what the tracker holds (Accelerator::end_training).
  virtual void finish() = 0;
  // Whether only the main process calls it (all built-in trackers write files there).
  virtual bool main_process_only() const { return true; }
};

// The built-in trackers' names (log_with also takes "all": every built-in one this build has).
inline const std::vector<std::string> kTrackerNames{"jsonl", "csv", "tensorboard"};

}  // namespace acc
