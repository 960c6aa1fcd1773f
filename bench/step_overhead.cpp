// step_overhead: what acc adds to a training step. The tiny MLP of DEVICE.md (512-512-10, batch
// 64, AdamW) is trained with the plain libtorch loop, with acc's Single strategy and with DDP on
// one process (buckets and hooks, nobody to talk to), in rotating rounds in one process, on the
// same pre-made batches; prints the median ms/step of each and the ratios acc/plain (goal: at
// most 1.02) and DDP/Single (goal: at most 1.05). All loops use the same optimizer: libtorch's
// torch::optim::AdamW, or with --optimizer acc acc::optim::AdamW (fused on CUDA).
//
//   build/bin/step_overhead [--device cpu|cuda] [--precision no|fp16|bf16] [--optimizer torch|acc]
//                           [--rounds N] [--steps N]
//   acc launch --cpu --num_processes N build/bin/step_overhead --scaling 1   (acc::CPU over Gloo, fp32)
#include <acc/acc.hpp>

#include "common/tiny_mlp.hpp"

#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using bench::median;
using bench::Mlp;

struct Batch {
  at::Tensor data, target;
};

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Both loops: zero_grad, forward, cross-entropy, backward, AdamW step; ms per step of one round.
template <class Step>
double time_round(const std::vector<Batch>& batches, int steps, const c10::Device& device, Step&& step) {
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step(batches[static_cast<std::size_t>(i) % batches.size()]);
  synchronize(device);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / steps;
}

// The same step through an Accelerator of the given strategy.
template <class Strategy, class Precision, class Optimizer>
class AccLoop {
 public:
  explicit AccLoop(const c10::Device& device, acc::ProcessEnvironment environment = {})
      : accelerator_(acc::AcceleratorOptions().environment(environment).cpu(device.is_cpu())),
        opt_(net_->parameters(), torch::optim::AdamWOptions(1e-3)),
        prepared_(accelerator_.prepare(net_, opt_)) {}
  void operator()(const Batch& b) {
    auto& [model, optimizer] = prepared_;
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model(b.data), b.target);
    accelerator_.backward(loss);
    optimizer.step();
  }

 private:
  acc::Accelerator<Strategy, Precision> accelerator_;
  Mlp net_;
  Optimizer opt_;
  decltype(accelerator_.prepare(net_, opt_)) prepared_;
};

std::vector<Batch> make_batches(const c10::Device& device) {
  torch::manual_seed(0);
  std::vector<Batch> batches;
  for (int i = 0; i < 16; ++i)
    batches.push_back(
        {torch::randn({64, 512}, device), torch::randint(0, 10, {64}, at::TensorOptions(device).dtype(at::kLong))});
  return batches;
}

#if ACC_HAS_GLOO
// --scaling 1: only acc::CPU's DDP loop in fp32, on every CPU rank of `acc launch --cpu`; its
// samples/s against one rank's give the scaling efficiency.
int run_scaling(const c10::Device device, int rounds, int steps) {
  using DDP = acc::CPU;
  using Precision = acc::FP32;
  using Optimizer = acc::optim::AdamW;
  const auto env = acc::ProcessEnvironment::from_environment();
  const auto batches = make_batches(device);
  AccLoop<DDP, Precision, Optimizer> ddp(device, env);
  std::vector<double> ms;
  time_round(batches, steps, device, ddp);  // warm-up
  for (int r = 0; r < rounds; ++r) ms.push_back(time_round(batches, steps, device, ddp));
  const double step_ms = median(ms);
  if (env.rank == 0)
    std::printf("mlp_ddp ranks=%d device=%s precision=%s ms_per_step=%.4f samples_per_s=%.0f\n", env.world_size,
                device.is_cpu() ? "cpu" : "cuda", std::string(Precision::name).c_str(), step_ms,
                env.world_size * 64 / (step_ms / 1000.0));
  return 0;
}
#endif

template <class Precision, class Optimizer>
int run(const c10::Device device, int rounds, int steps) {
  const auto batches = make_batches(device);

  bench::PlainMlpStep<Precision, Optimizer> plain_step(device);
  AccLoop<acc::Single, Precision, Optimizer> single(device);
  // DDP with one process: the gradient buckets and hooks run, with nobody to talk to.
#if ACC_HAS_NCCL
  using DDP = acc::DDP<acc::Nccl>;
  const bool has_ddp = device.is_cuda();
#elif ACC_HAS_GLOO
  using DDP = acc::CPU;
  const bool has_ddp = device.is_cpu();
#endif
#if ACC_HAS_NCCL || ACC_HAS_GLOO
  std::optional<AccLoop<DDP, Precision, Optimizer>> ddp;
  if (has_ddp) ddp.emplace(device);
#endif

  std::vector<double> plain_ms, single_ms, ddp_ms;
  // Each round runs the loops in a rotated order, so that none gains from its place.
  auto round = [&](int r, bool record) {
    double timing[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      const int which = (i + r) % 3;
      if (which == 0) timing[0] = time_round(batches, steps, device, plain_step);
      if (which == 1) timing[1] = time_round(batches, steps, device, single);
#if ACC_HAS_NCCL || ACC_HAS_GLOO
      if (which == 2 && ddp) timing[2] = time_round(batches, steps, device, *ddp);
#endif
    }
    if (!record) return;
    plain_ms.push_back(timing[0]);
    single_ms.push_back(timing[1]);
    ddp_ms.push_back(timing[2]);
  };
  round(0, false);  // warm-up
  for (int r = 0; r < rounds; ++r) round(r, true);
  const double plain = median(plain_ms), ours = median(single_ms), distributed = median(ddp_ms);
  std::printf("step_overhead device=%s precision=%s optimizer=%s libtorch=%s rounds=%d steps/round=%d\n",
              device.str().c_str(), std::string(Precision::name).c_str(),
              std::is_same_v<Optimizer, acc::optim::AdamW> ? "acc" : "torch", TORCH_VERSION, rounds, steps);
  std::printf("  plain libtorch      %.4f ms/step (median)\n  acc Single          %.4f ms/step (median)\n", plain,
              ours);
  std::printf("ratio acc/plain = %.3f\n", ours / plain);
  if (distributed > 0) {
    std::printf("  acc DDP, 1 process  %.4f ms/step (median)\n", distributed);
    std::printf("ratio ddp/single = %.3f\n", distributed / ours);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = torch::cuda::is_available() ? "cuda" : "cpu", precision = "no", optimizer = "torch";
  int rounds = 15, steps = 50;
  bool scaling = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--device")
      device_name = value;
    else if (flag == "--precision")
      precision = value;
    else if (flag == "--optimizer")
      optimizer = value;
    else if (flag == "--rounds")
      rounds = std::stoi(value);
    else if (flag == "--steps")
      steps = std::stoi(value);
    else if (flag == "--scaling")
      scaling = value == "1";
    else {
      std::cerr << "step_overhead: unknown flag " << flag
                << " (use --device, --precision, --optimizer, --rounds, --steps, --scaling 0|1)\n";
      return 2;
    }
  }
  const c10::Device device = device_name == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (optimizer != "torch" && optimizer != "acc") {
    std::cerr << "step_overhead: --optimizer must be torch or acc\n";
    return 2;
  }
  const bool ours = optimizer == "acc";
  if (scaling) {
#if ACC_HAS_GLOO
    return run_scaling(c10::Device(c10::kCPU), rounds, steps);
#else
    std::cerr << "step_overhead: --scaling 1 runs CPU ranks over Gloo, which this build lacks\n";
    return 2;
#endif
  }
  if (precision == "bf16")
    return ours ? run<acc::BF16, acc::optim::AdamW>(device, rounds, steps)
                : run<acc::BF16, torch::optim::AdamW>(device, rounds, steps);
  if (precision == "fp16")
    return ours ? run<acc::FP16, acc::optim::AdamW>(device, rounds, steps)
                : run<acc::FP16, torch::optim::AdamW>(device, rounds, steps);
  if (precision == "no")
    return ours ? run<acc::FP32, acc::optim::AdamW>(device, rounds, steps)
                : run<acc::FP32, torch::optim::AdamW>(device, rounds, steps);
  std::cerr << "step_overhead: --precision must be no, fp16 or bf16\n";
  return 2;
}
