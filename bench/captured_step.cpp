// captured_step: what acc::capture_step gains where a step is bound by kernel launches. The tiny
// MLP of step_overhead (512-512-10, batch 64, acc::optim::AdamW) is trained on one GPU by the plain
// libtorch loop, by acc's loop, and by the same loop through acc::capture_step (one CUDA graph per
// step), in rotating rounds in one process on the same pre-made batches; prints the median ms/step
// of each and the ratios. bench/gpu_captured_step.sh compares them with Python Accelerate.
//
//   build-gpu/bin/captured_step [--precision no|fp16|bf16] [--rounds N] [--steps N]
#include <acc/acc.hpp>

#include "common/tiny_mlp.hpp"

#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

using bench::median;
using bench::Mlp;

using Batch = torch::data::Example<>;

template <class Step>
double time_round(const std::vector<Batch>& batches, int steps, Step&& step) {
  torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step(batches[static_cast<std::size_t>(i) % batches.size()]);
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / steps;
}

// acc's loop on its own model: the step as a user writes it.
template <class Precision>
struct AccLoop {
  AccLoop()
      : accelerator(acc::AcceleratorOptions().environment(acc::ProcessEnvironment{})),
        opt(net->parameters(), torch::optim::AdamWOptions(1e-3)),
        prepared(accelerator.prepare(net, opt)) {}
  at::Tensor operator()(const Batch& b) {
    auto& [model, optimizer] = prepared;
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model(b.data), b.target);
    accelerator.backward(loss);
    optimizer.step();
    return loss;
  }
  acc::Accelerator<acc::Single, Precision> accelerator;
  Mlp net;
  acc::optim::AdamW opt;
  decltype(accelerator.prepare(net, opt)) prepared;
};

template <class Precision>
int run(int rounds, int steps) {
  const c10::Device cuda(c10::kCUDA, 0);
  torch::manual_seed(0);
  std::vector<Batch> batches;
  for (int i = 0; i < 16; ++i)
    batches.emplace_back(torch::randn({64, 512}, cuda),
                         torch::randint(0, 10, {64}, at::TensorOptions(cuda).dtype(at::kLong)));

  bench::PlainMlpStep<Precision, acc::optim::AdamW> plain_step(cuda);
  AccLoop<Precision> eager, graphed;
  auto captured =
      acc::capture_step(graphed.accelerator, std::get<1>(graphed.prepared), [&](const Batch& b) { return graphed(b); });

  std::vector<double> plain_ms, eager_ms, captured_ms;
  auto round = [&](int r, bool record) {  // each round rotates the order, so that none gains from its place
    double timing[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      const int which = (i + r) % 3;
      if (which == 0) timing[0] = time_round(batches, steps, plain_step);
      if (which == 1) timing[1] = time_round(batches, steps, eager);
      if (which == 2) timing[2] = time_round(batches, steps, captured);
    }
    if (!record) return;
    plain_ms.push_back(timing[0]);
    eager_ms.push_back(timing[1]);
    captured_ms.push_back(timing[2]);
  };
  round(0, false);  // warm-up, and the capture
  if (!captured.captured()) throw acc::Error("captured_step: the step was not captured after the warm-up");
  for (int r = 0; r < rounds; ++r) round(r, true);
  const double plain = median(plain_ms), ours = median(eager_ms), graph = median(captured_ms);
  const std::string precision(Precision::name);
  std::printf("acc mlp precision=%s mode=plain ms_per_step=%.4f\n", precision.c_str(), plain);
  std::printf("acc mlp precision=%s mode=eager ms_per_step=%.4f\n", precision.c_str(), ours);
  std::printf("acc mlp precision=%s mode=captured ms_per_step=%.4f\n", precision.c_str(), graph);
  std::printf("ratio eager/captured = %.2f, plain/captured = %.2f (rounds=%d steps/round=%d)\n", ours / graph,
              plain / graph, rounds, steps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string precision = "no";
  int rounds = 15, steps = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--precision")
      precision = value;
    else if (flag == "--rounds")
      rounds = std::stoi(value);
    else if (flag == "--steps")
      steps = std::stoi(value);
    else {
      std::cerr << "captured_step: unknown flag " << flag << " (use --precision no|fp16|bf16, --rounds, --steps)\n";
      return 2;
    }
  }
  if (!torch::cuda::is_available()) {
    std::cerr << "captured_step: needs a CUDA device\n";
    return 2;
  }
  if (precision == "no") return run<acc::FP32>(rounds, steps);
  if (precision == "bf16") return run<acc::BF16>(rounds, steps);
  if (precision == "fp16") return run<acc::FP16>(rounds, steps);
  std::cerr << "captured_step: --precision must be no, fp16 or bf16\n";
  return 2;
}
