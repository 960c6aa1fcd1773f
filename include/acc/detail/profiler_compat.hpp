// The profiler's share of what differs between the libtorch builds (detail/torch_compat.hpp holds
// the rest), apart so that only programs that profile include libtorch's profiler headers. Both
// versions have the Kineto API (enableProfiler, disableProfiler returning a ProfilerResult with
// events() and save()); they differ in two ways handled here:
// - KinetoEvent's times: startUs()/durationUs() up to 2.0, startNs()/durationNs() since. Told
//   apart by which member exists rather than by version number.
// - Whether libtorch was built with libkineto (USE_KINETO): the 2.x wheels are, Debian's 1.13 is
//   not. Without it the events are recorded all the same, but save() throws "Saving a trace
//   requires ... Kineto"; and the flag is libtorch's, invisible to a program's headers, so
//   save_kineto_trace() tries and says whether libtorch wrote the trace.
#pragma once

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdint>
#include <string>

namespace acc::compat {

namespace kineto_profiler = torch::autograd::profiler;

template <class Event>
auto event_start_ns(const Event& event, int) -> decltype(static_cast<int64_t>(event.startNs())) {
  return static_cast<int64_t>(event.startNs());
}
template <class Event>
int64_t event_start_ns(const Event& event, long) {
  return static_cast<int64_t>(event.startUs()) * 1000;
}
template <class Event>
auto event_duration_ns(const Event& event, int) -> decltype(static_cast<int64_t>(event.durationNs())) {
  return static_cast<int64_t>(event.durationNs());
}
template <class Event>
int64_t event_duration_ns(const Event& event, long) {
  return static_cast<int64_t>(event.durationUs()) * 1000;
}

// When the event started and how long it lasted, in nanoseconds (microseconds x 1000 up to 2.0).
inline int64_t start_ns(const kineto_profiler::KinetoEvent& event) { return event_start_ns(event, 0); }
inline int64_t duration_ns(const kineto_profiler::KinetoEvent& event) { return event_duration_ns(event, 0); }

// Writes libtorch's own Chrome trace (with Kineto's GPU activities and flows) and returns true;
// false where libtorch has no Kineto, leaving the trace to the caller. A failure of any other kind
// is left to the caller as well, whose own writer names it.
inline bool save_kineto_trace(kineto_profiler::ProfilerResult& result, const std::string& path) {
  try {
    result.save(path);
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

}  // namespace acc::compat
