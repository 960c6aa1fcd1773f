// The bodies of dispatch/available_memory.hpp.
#pragma once

#include <acc/dispatch/available_memory.hpp>
#include <acc/error.hpp>

#if ACC_HAS_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>
#endif

#include <cstdint>
#include <fstream>
#include <string>

namespace acc {

ACC_DECL MaxMemory available_memory() {
  MaxMemory budgets;
#if ACC_HAS_CUDA
  for (int gpu = 0; gpu < static_cast<int>(torch::cuda::device_count()); ++gpu) {
    const c10::cuda::CUDAGuard on_gpu(static_cast<c10::DeviceIndex>(gpu));
    std::size_t free = 0, total = 0;
    if (const auto status = cudaMemGetInfo(&free, &total); status != cudaSuccess) {
      (void)cudaGetLastError();  // clear it: the next CUDA call must not report it
      throw Error("cannot read the free memory of GPU " + std::to_string(gpu) + " (" + cudaGetErrorString(status) +
                  "): give the budgets yourself in max_memory, e.g. {{\"0\", \"20GiB\"}, {\"cpu\", \"64GiB\"}}");
    }
    budgets.emplace(std::to_string(gpu), static_cast<unsigned long long>(free));
  }
#endif
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    unsigned long long kib = 0;
    if (key == "MemAvailable:" && meminfo >> kib) {
      budgets.emplace("cpu", kib * 1024);
      return budgets;
    }
    meminfo.ignore(1 << 10, '\n');
  }
  throw Error(
      "cannot read MemAvailable from /proc/meminfo, the host's available memory: give the budgets yourself in "
      "max_memory, e.g. {{\"0\", \"20GiB\"}, {\"cpu\", \"64GiB\"}}");
}

}  // namespace acc
