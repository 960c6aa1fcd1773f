// acc::ProfileOptions: what Python Accelerate's ProfileKwargs holds, for acc::Profiler.
//
//   acc::ProfileOptions()
//       .activities({"cpu", "cuda"})
//       .schedule(acc::ProfileSchedule().wait(1).warmup(1).active(3).repeat(2))
//       .record_shapes(true)
//       .output_trace_dir("traces")
#pragma once

#include <acc/detail/linkage.hpp>

#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace acc {

// What the profiler does in one step of a schedule (torch.profiler.ProfilerAction).
enum class ProfilerAction {
  none,            // not profiled
  warmup,          // profiler started, events thrown away: its start-up cost stays out of the trace
  record,          // events recorded
  record_and_save  // the last recorded step of a cycle: the trace is written after it
};

// torch.profiler.schedule: skip_first steps, then cycles of `wait` steps not profiled, `warmup`
// steps and `active` recorded steps; `repeat` cycles, or as many as the steps last when 0.
struct ProfileSchedule {
  // The action of step `step` (0 is the step before the first Profiler::step()), as torch's
  // schedule function computes it.
  ProfilerAction action(int64_t step) const;

  TORCH_ARG(int64_t, wait) = 0;
  TORCH_ARG(int64_t, warmup) = 0;
  // Steps recorded per cycle: required, at least 1.
  TORCH_ARG(int64_t, active) = 0;
  TORCH_ARG(int64_t, repeat) = 0;
  TORCH_ARG(int64_t, skip_first) = 0;
};

struct ProfileOptions {
  // "cpu" (the operators) and "cuda" (the kernels, with a CUDA device): Accelerate's default is
  // both; "cuda" is left out where the accelerator's device is not a GPU, as torch does there.
  TORCH_ARG(std::vector<std::string>, activities) = {"cpu", "cuda"};
  // Unset: every step from the profiler's start to its stop is recorded, as one window.
  TORCH_ARG(std::optional<ProfileSchedule>, schedule);
  // The operators' input shapes and dtypes, in the trace.
  TORCH_ARG(bool, record_shapes) = false;
  // Memory allocations and frees, in the trace.
  TORCH_ARG(bool, profile_memory) = false;
  // Estimated FLOPs of matrix multiplications and convolutions, in the trace and the table.
  TORCH_ARG(bool, with_flops) = false;
  // Source locations: a C++ program has no Python stack, so libtorch records TorchScript frames only.
  TORCH_ARG(bool, with_stack) = false;
  // Where each process writes its Chrome trace, profile_<process index>.json; empty: no trace file.
  TORCH_ARG(std::string, output_trace_dir);
};

// Throws acc::Error naming the option and its allowed values when `options` cannot profile.
ACC_DECL void check_profile_options(const ProfileOptions& options);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/profiling/impl/profile_options.ipp>
#endif
