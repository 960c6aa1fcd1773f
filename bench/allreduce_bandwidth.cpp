// allreduce_bandwidth: all-reduce bus bandwidth through acc's Nccl policy (NCCL called directly
// on the current CUDA stream), fp32, 1 MiB to 256 MiB. Run under `acc launch --multi_gpu`;
// bench/py/allreduce_bandwidth.py measures libtorch's ProcessGroupNCCL the same way, and
// scripts/gpu_multi.sh prints the ratio.
#include <acc/comm/nccl.hpp>
#include <acc/comm/rendezvous.hpp>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/ops/ones.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <vector>

int main() {
#if ACC_HAS_NCCL
  const auto env = acc::ProcessEnvironment::from_environment();
  c10::cuda::CUDAGuard guard(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)));
  acc::Nccl comm(env, acc::rendezvous(env, env.rendezvous_timeout), acc::ProcessGroupOptions());
  const int warmup = 5, iterations = 20, repeats = 5;
  for (const int mib : {1, 4, 25, 100, 256}) {
    auto buffer = at::ones({int64_t{mib} * 1024 * 1024 / 4}, at::TensorOptions(comm.device()).dtype(at::kFloat));
    for (int i = 0; i < warmup; ++i) comm.all_reduce(buffer, acc::ReduceOp::sum);
    std::vector<double> times;
    for (int r = 0; r < repeats; ++r) {
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);  // default flags keep timing on
      start.record();
      for (int i = 0; i < iterations; ++i) comm.all_reduce(buffer, acc::ReduceOp::sum);
      stop.record();
      stop.synchronize();
      times.push_back(start.elapsed_time(stop) * 1000.0 / iterations);
    }
    std::sort(times.begin(), times.end());
    const double us = times[times.size() / 2];  // the median window
    const double bytes = static_cast<double>(buffer.numel()) * 4;
    const double busbw = bytes / (us * 1e-6) * 2.0 * (env.world_size - 1) / env.world_size / 1e9;
    if (env.rank == 0) std::printf("acc_nccl size_mib=%d time_us=%.1f busbw_gbps=%.1f\n", mib, us, busbw);
  }
  comm.barrier();
  return 0;
#else
  std::cerr << "allreduce_bandwidth needs a build with NCCL (ACC_HAS_NCCL)\n";
  return 2;
#endif
}
