#pragma once

#include <acc/detail/files.hpp>
#include <acc/detail/profiler_compat.hpp>
#include <acc/error.hpp>
#include <acc/profiling/profiler.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cerrno>
#include <filesystem>
#include <set>
#include <system_error>

namespace acc::detail {

namespace profiler_impl = torch::profiler::impl;

// Creates output_trace_dir and returns this process's trace file in it.
ACC_DECL std::string prepared_trace_file(const std::string& dir, int process_index) {
  const auto fix = "; pass a directory this process may create and write in, or no output_trace_dir for no trace file";
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw Error("cannot create ProfileOptions' output_trace_dir '" + dir + "': " + error.message() + fix);
  if (::access(dir.c_str(), W_OK) != 0)
    throw Error("ProfileOptions' output_trace_dir '" + dir + "' is not writable: " + system_error_text(errno) + fix);
  return (std::filesystem::path(dir) / ("profile_" + std::to_string(process_index) + ".json")).string();
}

ACC_DECL ProfiledEvent profiled_event(const compat::kineto_profiler::KinetoEvent& event) {
  ProfiledEvent out;
  out.name = event.name();
  if (out.name == "[memory]")
    out.kind = ProfiledEvent::Kind::memory;
  else if (event.deviceType() != c10::DeviceType::CPU)
    out.kind = ProfiledEvent::Kind::kernel;
  else if (event.scope() == static_cast<uint8_t>(at::RecordScope::USER_SCOPE))
    out.kind = ProfiledEvent::Kind::user_annotation;
  out.thread =
      out.kind == ProfiledEvent::Kind::kernel ? static_cast<uint64_t>(event.deviceResourceId()) : event.startThreadId();
  out.device_index = static_cast<int>(event.deviceIndex());
  out.start_ns = compat::start_ns(event);
  out.duration_ns = compat::duration_ns(event);
  if (event.hasShapes())
    for (const auto& shape : event.shapes()) out.input_shapes.push_back(shape);
  if (event.hasTypes())
    for (const auto& type : event.dtypes()) out.input_types.push_back(type);
  out.flops = event.flops();
  out.bytes = event.nBytes();
  out.correlation_id = event.correlationId();
  return out;
}

ACC_DECL profiler_impl::ProfilerConfig profiler_config(const ProfileOptions& options) {
  return profiler_impl::ProfilerConfig(profiler_impl::ProfilerState::KINETO, options.record_shapes(),
                                       options.profile_memory(), options.with_stack(), options.with_flops());
}

ACC_DECL std::set<profiler_impl::ActivityType> profiler_activities(const ProfileOptions& options, bool profile_cuda) {
  std::set<profiler_impl::ActivityType> activities;
  for (const auto& activity : options.activities()) {
    if (activity == "cpu") activities.insert(profiler_impl::ActivityType::CPU);
    if (activity == "cuda" && profile_cuda) activities.insert(profiler_impl::ActivityType::CUDA);
  }
  return activities;
}

// The Chrome trace (chrome://tracing, Perfetto) of `events`, in the layout of Kineto's.
ACC_DECL std::string chrome_trace(const std::vector<ProfiledEvent>& events) {
  const auto pid = static_cast<int64_t>(::getpid());
  auto trace_events = nlohmann::json::array();
  for (const auto& event : events) {
    nlohmann::json entry{{"name", event.name}, {"ts", static_cast<double>(event.start_ns) / 1e3}};
    nlohmann::json args = nlohmann::json::object();
    switch (event.kind) {
      case ProfiledEvent::Kind::op:
      case ProfiledEvent::Kind::user_annotation:
        entry.update({{"ph", "X"},
                      {"cat", event.kind == ProfiledEvent::Kind::op ? "cpu_op" : "user_annotation"},
                      {"pid", pid},
                      {"tid", event.thread},
                      {"dur", static_cast<double>(event.duration_ns) / 1e3}});
        args["External id"] = event.correlation_id;
        if (!event.input_shapes.empty()) args["Input Dims"] = event.input_shapes;
        if (!event.input_types.empty()) args["Input type"] = event.input_types;
        if (event.flops > 0) args["flops"] = event.flops;
        break;
      case ProfiledEvent::Kind::kernel:
        entry.update({{"ph", "X"},
                      {"cat", "kernel"},
                      {"pid", event.device_index},
                      {"tid", event.thread},
                      {"dur", static_cast<double>(event.duration_ns) / 1e3}});
        args = {{"device", event.device_index}, {"stream", event.thread}, {"correlation", event.correlation_id}};
        break;
      case ProfiledEvent::Kind::memory:
        entry.update({{"ph", "i"}, {"s", "t"}, {"cat", "cpu_instant_event"}, {"pid", pid}, {"tid", event.thread}});
        args = {{"Bytes", event.bytes}, {"Device Id", event.device_index}};
        break;
    }
    entry["args"] = std::move(args);
    trace_events.push_back(std::move(entry));
  }
  const nlohmann::json trace{{"schemaVersion", 1}, {"displayTimeUnit", "ms"}, {"traceEvents", std::move(trace_events)}};
  return trace.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace acc::detail

namespace acc {

ACC_DECL ProfilerSession::ProfilerSession(ProfileOptions options, int process_index, bool profile_cuda)
    : options_(std::move(options)), profile_cuda_(profile_cuda) {
  check_profile_options(options_);
  if (!profile_cuda_ && options_.activities() == std::vector<std::string>{"cuda"})
    throw Error(
        "ProfileOptions' activities are only \"cuda\", but this process runs on the CPU: add \"cpu\" to profile its "
        "operators");
  if (!options_.output_trace_dir().empty())
    trace_file_ = detail::prepared_trace_file(options_.output_trace_dir(), process_index);
  enter(action(0));
}

ACC_DECL ProfilerSession::~ProfilerSession() {
  if (stopped_ || !prepared_) return;
  step_annotation_.reset();
  try {
    end_window(/*keep=*/false);
  } catch (...) {  // a destructor: the profiler is off either way
  }
}

ACC_DECL void ProfilerSession::step() {
  if (stopped_)
    throw Error(
        "Profiler::step() after stop(): call step() at the end of each profiled step, before stop() or the "
        "end of the Profiler's scope");
  step_annotation_.reset();
  ++step_num_;
  enter(action(step_num_));
}

ACC_DECL void ProfilerSession::stop() {
  if (stopped_) return;
  stopped_ = true;
  step_annotation_.reset();
  if (prepared_) end_window(/*keep=*/recording_);
}

ACC_DECL ProfilerAction ProfilerSession::action(int64_t step) const {
  return options_.schedule() ? options_.schedule()->action(step) : ProfilerAction::record;
}

// The transitions of torch.profiler.profile between one step's action and the next.
ACC_DECL void ProfilerSession::enter(ProfilerAction next) {
  const auto previous = action_;
  action_ = next;
  const bool records = next == ProfilerAction::record || next == ProfilerAction::record_and_save;
  if (recording_ && (previous == ProfilerAction::record_and_save || !records)) end_window(/*keep=*/true);
  // A warm-up that no recording follows: started and ended as torch does, keeping nothing.
  if (prepared_ && !recording_ && next == ProfilerAction::none) end_window(/*keep=*/false);
  if (next != ProfilerAction::none && !prepared_) prepare();
  if (records && !recording_) start();
  // torch marks the steps only when it has a schedule to count them by.
  if (recording_ && options_.schedule()) annotate_step();
}

ACC_DECL void ProfilerSession::prepare() {
  compat::kineto_profiler::prepareProfiler(detail::profiler_config(options_),
                                           detail::profiler_activities(options_, profile_cuda_));
  prepared_ = true;
}

ACC_DECL void ProfilerSession::start() {
  compat::kineto_profiler::enableProfiler(detail::profiler_config(options_),
                                          detail::profiler_activities(options_, profile_cuda_));
  recording_ = true;
}

ACC_DECL void ProfilerSession::end_window(bool keep) {
  if (!recording_) start();
  recording_ = prepared_ = false;
  auto result = compat::kineto_profiler::disableProfiler();
  if (!keep || !result) return;
  events_.clear();
  for (const auto& event : result->events()) events_.push_back(detail::profiled_event(event));
  if (!trace_file_.empty() && !compat::save_kineto_trace(*result, trace_file_))
    detail::write_synced(trace_file_, detail::chrome_trace(events_));
}

ACC_DECL void ProfilerSession::annotate_step() {
  step_annotation_ = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
  step_annotation_->before("ProfilerStep#" + std::to_string(step_num_));
}

}  // namespace acc
