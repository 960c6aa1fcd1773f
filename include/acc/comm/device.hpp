// The device a process trains on, from where it sits in the job.
#pragma once

#include <acc/config/environment.hpp>
#include <acc/error.hpp>

#include <c10/core/Device.h>
#include <torch/cuda.h>

#include <string>

namespace acc {

// cuda:<local_rank> when CUDA is there and not turned off, else the CPU.
inline c10::Device default_device(const ProcessEnvironment& env, bool force_cpu = false) {
  if (force_cpu || env.use_cpu || !torch::cuda::is_available()) return c10::Device(c10::kCPU);
  const auto visible = static_cast<int>(torch::cuda::device_count());
  if (env.local_rank >= visible)
    throw Error("local rank " + std::to_string(env.local_rank) + " needs cuda:" + std::to_string(env.local_rank) +
                " but only " + std::to_string(visible) +
                " CUDA devices are visible; start at most that many processes per node (--num_processes), "
                "or check CUDA_VISIBLE_DEVICES / --gpu_ids");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
}

}  // namespace acc
