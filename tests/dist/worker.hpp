// Shared by the multi-process test cases: the accelerator of this rank, on the backend the test
// asked for.
#pragma once

#include <acc/acc.hpp>

#include <cstdlib>
#include <string>

#include <ATen/core/Tensor.h>

#include <vector>

#if ACC_HAS_NCCL
using GpuAccelerator = acc::Accelerator<acc::DDP<acc::Nccl>, acc::FP32, acc::Shuffled>;
// One accelerator (one rendezvous) serves every test case of the process.
inline GpuAccelerator& gpu_accelerator() {
  static GpuAccelerator accelerator;
  return accelerator;
}
#endif
#if ACC_HAS_GLOO
using CpuAccelerator = acc::Accelerator<acc::CPU, acc::FP32, acc::Shuffled>;
inline CpuAccelerator& cpu_accelerator() {
  static CpuAccelerator accelerator;
  return accelerator;
}
#endif

// How far apart two float64 trainings with AdamW (eps 1e-8) may end, per parameter, when they sum
// the same gradient terms in another order (DDP against one process, FSDP against DDP). Their
// gradients differ by rounding: at most about 1e-13 (some 1000 terms of magnitude below 1, float64's
// roundoff 1.1e-16). AdamW divides by sqrt(v) + eps, so near a zero gradient a difference d moves a
// parameter by up to lr * d / eps per step. In float32 (roundoff 6e-8) that bound is O(lr), the size
// of a real error too (a bucket or shard lost or averaged wrongly moves parameters by about lr per
// step), so no float32 tolerance both holds on every machine and catches a bug: these comparisons
// train in float64.
constexpr double adamw_float64_drift(int steps, double lr) { return steps * lr * 1e-13 / 1e-8; }

// Whether every rank holds the same values of each of `module`'s parameters, bit for bit (a
// collective: every rank calls it).
template <class Accelerator>
bool same_parameters_on_every_rank(Accelerator& accelerator, const torch::nn::Module& module) {
  bool same = true;
  for (const auto& p : module.parameters()) {
    const auto all = accelerator.gather(p.detach().reshape({1, -1}));
    for (int64_t r = 1; r < all.size(0); ++r) same = same && at::equal(all[r], all[0]);
  }
  return same;
}

// Calls fn with this rank's accelerator: acc::CPU over Gloo unless ACC_TEST_BACKEND=nccl.
template <class Fn>
void with_accelerator(Fn&& fn) {
  const char* backend = std::getenv("ACC_TEST_BACKEND");
  if (backend && std::string(backend) == "nccl") {
#if ACC_HAS_NCCL
    fn(gpu_accelerator());
#else
    throw acc::Error("ACC_TEST_BACKEND=nccl but this build has no NCCL");
#endif
  } else {
#if ACC_HAS_GLOO
    fn(cpu_accelerator());
#else
    throw acc::Error("this build has no Gloo: run the multi-process tests with ACC_TEST_BACKEND=nccl");
#endif
  }
}

// The safetensors check against Python (interop.cpp): mode interop-write or interop-read.
int safetensors_interop(const std::string& mode, const std::string& dir);

// Training that checkpoints and resumes after a restart, with test faults (elastic.cpp).
int elastic_training(int argc, char** argv);

// A tensor's values, flattened, as int64 (on the CPU).
inline std::vector<int64_t> int_values(const at::Tensor& t) {
  const auto c = t.to(at::kCPU).to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}
