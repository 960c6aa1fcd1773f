// acc::Trackers: the trackers of a run, as the Accelerator holds them (init_trackers, log,
// end_training). Built-in trackers are created by name on the main process only, each writing
// under logging_dir/project_name; trackers added by the program are called on every process
// whose main_process_only() allows it.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>
#include <acc/tracking/csv_tracker.hpp>
#include <acc/tracking/jsonl_tracker.hpp>
#include <acc/tracking/tensorboard_tracker.hpp>
#include <acc/tracking/tracker.hpp>
#include <acc/tracking/value.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#ifndef ACC_HAS_TENSORBOARD
#define ACC_HAS_TENSORBOARD 0
#endif

namespace acc {

// What depends on ACC_HAS_TENSORBOARD (the names allowed, the trackers made, hence the constructor
// and start()) stays in this header: whether the program links acc::tensorboard is the program's
// to decide, not the separately compiled library's.
namespace detail {
inline bool tracker_built(std::string_view name) { return name != "tensorboard" || ACC_HAS_TENSORBOARD; }

// "all" and the built-in trackers' names, for messages.
ACC_DECL std::string tracker_names_text();

// log_with's names with "all" expanded to every built-in tracker this program has, without
// repeats, in the order given; an unknown or unavailable name is an error that says what to do.
inline std::vector<std::string> resolve_tracker_names(const std::vector<std::string>& log_with) {
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

inline std::shared_ptr<Tracker> make_tracker(const std::string& name, const std::filesystem::path& run_dir) {
  if (name == "jsonl") return std::make_shared<JsonlTracker>(run_dir);
  if (name == "csv") return std::make_shared<CsvTracker>(run_dir);
#if ACC_HAS_TENSORBOARD
  if (name == "tensorboard") return std::make_shared<TensorBoardTracker>(run_dir);
#endif
  throw Error("no tracker named '" + name + "'; allowed values: " + tracker_names_text());
}
}  // namespace detail

class Trackers {
 public:
  // log_with's names are checked here, so that a misspelt one fails before training starts.
  explicit Trackers(const std::vector<std::string>& log_with = {}) : names_(detail::resolve_tracker_names(log_with)) {}

  // Trackers the program made itself (Python's GeneralTracker subclasses in log_with), called
  // along with the built-in ones; on processes other than the main one only if they are not
  // main_process_only().
  void add(std::shared_ptr<Tracker> tracker);

  // Creates the trackers log_with names (on the main process) under logging_dir/project_name (an
  // absolute project_name stands alone, as in Python's os.path.join) and stores the configuration
  // in each.
  void start(const std::string& project_name, const std::filesystem::path& logging_dir, bool is_main_process,
             const TrackedValues& config) {
    if (state_ == State::started)
      throw Error("init_trackers() was called twice; call it once per run (end_training() ends a run)");
    if (project_name.empty())
      throw Error("init_trackers() needs a project name: the trackers write under '" + logging_dir.string() +
                  "/<project name>'");
    active_.clear();
    if (is_main_process)
      for (const auto& name : names_) active_.push_back(detail::make_tracker(name, logging_dir / project_name));
    for (const auto& tracker : custom_)
      if (is_main_process || !tracker->main_process_only()) active_.push_back(tracker);
    for (const auto& tracker : active_) tracker->store_init_configuration(config);
    state_ = State::started;
  }

  // Logs to every tracker of this process. Nothing to do where none was configured, so that a
  // loop may always call it.
  void log(const TrackedValues& values, std::optional<int64_t> step);

  void finish();

  // The active tracker of that name on this process, or nullptr (none by that name, or not the
  // main process).
  Tracker* get(std::string_view name) const;
  const std::vector<std::shared_ptr<Tracker>>& active() const { return active_; }

 private:
  enum class State { not_started, started, finished };

  std::vector<std::string> names_;
  std::vector<std::shared_ptr<Tracker>> custom_;
  std::vector<std::shared_ptr<Tracker>> active_;
  State state_ = State::not_started;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/trackers.ipp>
#endif
