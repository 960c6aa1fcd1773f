// acc::Profiler: Python Accelerate's `with accelerator.profile(ProfileKwargs(...)) as prof:` as a
// scope. It runs libtorch's profiler over the steps its schedule records (every step without one);
// each recorded window ends by writing this process's Chrome trace, profile_<process index>.json,
// to output_trace_dir (the last window's stays, as Accelerate's export at the end of the `with`
// leaves it), and key_averages() sums the last window's events by name.
//
//   acc::Profiler prof(accelerator, acc::ProfileOptions().output_trace_dir("traces"));
//   for (auto& batch : loader) {
//     ... accelerator.backward(loss); optimizer.step(); optimizer.zero_grad();
//     prof.step();
//   }
//   prof.stop();  // the end of Python's `with`: the last trace written, every process waited for
//   accelerator.print(prof.key_averages().table("self_cpu_time_total", 10));
//
// Leaving the scope without stop() stops it (and, left by an exception, only turns the profiler
// off: the other processes may not be there to wait for).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/profiling/key_averages.hpp>
#include <acc/profiling/profile_options.hpp>

#include <ATen/record_function.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace acc {

// The profiler of one process, without the accelerator: Profiler's engine.
class ProfilerSession {
 public:
  // Checks the options (acc::Error), creates output_trace_dir, and starts the first step.
  // `profile_cuda`: whether the program runs on a GPU, so that a "cuda" activity records kernels.
  ProfilerSession(ProfileOptions options, int process_index, bool profile_cuda);
  // Turns libtorch's profiler off if stop() did not, writing nothing.
  ~ProfilerSession();
  ProfilerSession(const ProfilerSession&) = delete;
  ProfilerSession& operator=(const ProfilerSession&) = delete;

  // Ends a step and starts the next, as the schedule says (torch.profiler.profile.step()).
  void step();
  // Ends profiling; a window open then ends as at its last step (its trace written).
  void stop();
  bool stopped() const { return stopped_; }

  // The events of the last recorded window, and their sums by name.
  const std::vector<ProfiledEvent>& events() const { return events_; }
  KeyAverages key_averages() const { return KeyAverages(events_); }
  // output_trace_dir/profile_<process index>.json, or "" without output_trace_dir.
  const std::string& trace_file() const { return trace_file_; }
  // How many times step() was called.
  int64_t step_num() const { return step_num_; }

 private:
  ProfilerAction action(int64_t step) const;
  void enter(ProfilerAction action);
  void prepare();
  void start();
  void end_window(bool keep);
  void annotate_step();

  ProfileOptions options_;
  std::string trace_file_;
  bool profile_cuda_;
  int64_t step_num_ = 0;
  ProfilerAction action_ = ProfilerAction::none;
  bool prepared_ = false;
  bool recording_ = false;
  bool stopped_ = false;
  std::unique_ptr<at::RecordFunction> step_annotation_;  // ProfilerStep#<n> around each scheduled step
  std::vector<ProfiledEvent> events_;
};

template <class Accelerator>
class Profiler {
 public:
  explicit Profiler(Accelerator& accelerator, ProfileOptions options = ProfileOptions())
      : accelerator_(accelerator),
        session_(std::move(options), accelerator.process_index(), accelerator.device().is_cuda()),
        uncaught_at_start_(std::uncaught_exceptions()) {}
  ~Profiler() noexcept(false) {
    if (!session_.stopped() && std::uncaught_exceptions() == uncaught_at_start_) stop();
  }
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  void step() { session_.step(); }
  // Ends profiling, writing the trace of a window still open, and with output_trace_dir waits until
  // every process has written its trace (as Accelerate does). Later calls do nothing.
  void stop() {
    if (session_.stopped()) return;
    session_.stop();
    if (!session_.trace_file().empty()) accelerator_.wait_for_everyone();
  }

  const std::vector<ProfiledEvent>& events() const { return session_.events(); }
  KeyAverages key_averages() const { return session_.key_averages(); }
  const std::string& trace_file() const { return session_.trace_file(); }
  int64_t step_num() const { return session_.step_num(); }

 private:
  Accelerator& accelerator_;
  ProfilerSession session_;
  int uncaught_at_start_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/profiling/impl/profiler.ipp>
#endif
