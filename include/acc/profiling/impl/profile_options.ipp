#pragma once

#include <acc/error.hpp>
#include <acc/profiling/profile_options.hpp>

#include <string>

namespace acc {

ACC_DECL ProfilerAction ProfileSchedule::action(int64_t step) const {
  if (step < skip_first()) return ProfilerAction::none;
  step -= skip_first();
  const int64_t cycle = wait() + warmup() + active();
  if (repeat() > 0 && step / cycle >= repeat()) return ProfilerAction::none;
  const int64_t in_cycle = step % cycle;
  if (in_cycle < wait()) return ProfilerAction::none;
  if (in_cycle < wait() + warmup()) return ProfilerAction::warmup;
  return in_cycle < cycle - 1 ? ProfilerAction::record : ProfilerAction::record_and_save;
}

ACC_DECL void check_profile_options(const ProfileOptions& options) {
  if (options.activities().empty())
    throw Error("ProfileOptions' activities are empty: name what to profile, \"cpu\" and/or \"cuda\"");
  for (const auto& activity : options.activities())
    if (activity != "cpu" && activity != "cuda")
      throw Error("ProfileOptions' activities hold \"" + activity +
                  "\", which this profiler does not know: use \"cpu\" and/or \"cuda\"");
  if (const auto& schedule = options.schedule()) {
    const auto check = [](const char* name, int64_t value, int64_t least) {
      if (value < least)
        throw Error("ProfileSchedule's " + std::string(name) + " is " + std::to_string(value) +
                    "; it must be at least " + std::to_string(least) +
                    ", e.g. ProfileSchedule().wait(1).warmup(1).active(3)");
    };
    check("active", schedule->active(), 1);
    check("wait", schedule->wait(), 0);
    check("warmup", schedule->warmup(), 0);
    check("repeat", schedule->repeat(), 0);
    check("skip_first", schedule->skip_first(), 0);
  }
}

}  // namespace acc
