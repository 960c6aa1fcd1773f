// The C++ twin of Accelerate's examples/by_feature/gradient_accumulation.py: accumulate(model)
// around each micro-batch, so that gradients are all-reduced and the optimizer steps only every
// --gradient_accumulation_steps batches. It checks what accumulation promises: k micro-batches of
// b examples train the model exactly as batches of k * b examples do (it trains both ways).
//
//   build/bin/gradient_accumulation --gradient_accumulation_steps 4
//   build/bin/acc launch --cpu --num_processes 2 build/bin/gradient_accumulation
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Settings {
  int64_t epochs = 2;
  int64_t batch_size = 8;  // of a micro-batch, per process
  double lr = 0.1;
  int64_t gradient_accumulation_steps = 4;
  int64_t train_size = 512;
  int64_t seed = 0;
};

// The weights after training with micro-batches of `batch_size`, `accumulation` of them per step.
// In float64 with SGD, so that the two ways differ only by the order of the sums (see below).
template <class Accelerator>
std::vector<at::Tensor> train(Accelerator& accelerator, const Settings& s, int64_t batch_size, int64_t accumulation) {
  accelerator.free_memory();                              // acc: forget the previous run's objects
  accelerator.gradient_accumulation_steps(accumulation);  // acc
  accelerator.set_seed(static_cast<uint64_t>(s.seed));
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  net->to(at::kDouble);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(s.lr));
  // Index order: the micro-batches of one step hold the examples of one large batch.
  auto [model, optimizer, loader] = accelerator.prepare(  // acc
      net, opt,
      acc::DataLoader(examples::Points(s.train_size, static_cast<uint64_t>(s.seed) + 1),
                      acc::DataLoaderOptions(batch_size).shuffle(false)));
  for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
    loader.set_epoch(epoch);
    for (auto& batch : loader) {
      auto step = accelerator.accumulate(model);  // acc
      auto loss = torch::nn::functional::cross_entropy(model(batch.data.to(at::kDouble)), batch.target);
      accelerator.backward(loss);  // acc: divides by the accumulation steps; all-reduces on the last
      optimizer.step();            // steps only when accelerator.sync_gradients()
      optimizer.zero_grad();
    }
  }
  std::vector<at::Tensor> weights;
  for (const auto& p : net->parameters()) weights.push_back(p.detach().clone());
  return weights;
}

template <class Accelerator>
int compare(Accelerator& accelerator, const Settings& s) {
  const int64_t k = s.gradient_accumulation_steps;
  if (s.train_size % (s.batch_size * k * accelerator.num_processes()) != 0)
    throw acc::Error(
        "--train_size must be a multiple of --batch_size x --gradient_accumulation_steps x processes, "
        "so that both ways see the same large batches");
  const auto accumulated = train(accelerator, s, s.batch_size, k);
  const auto large = train(accelerator, s, s.batch_size * k, 1);
  // The two differ in how the gradient's sum over the large batch is split: float64 rounding,
  // 1e-16 relative per addition over some hundred terms, grown by SGD's steps to well below 1e-10
  // of the weights (which are of order 1). A wrong accumulation (a missing division by k, a step
  // per micro-batch) moves them by about lr, 0.1.
  double largest = 0;
  for (std::size_t i = 0; i < large.size(); ++i)
    largest = std::max(largest, acc::item<double>((accumulated[i] - large[i]).abs().max()));
  accelerator.print("gradient accumulation over", k, "micro-batches vs batches", k, "times larger, on",
                    accelerator.num_processes(), "processes: largest weight difference", largest);
  if (!(largest < 1e-10)) {
    std::cerr << "gradient_accumulation: the two ways trained different weights\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("gradient_accumulation",
                  "Accumulates gradients over micro-batches, and checks it against large batches.")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per micro-batch and process")
      .add("--lr", s.lr, "SGD's learning rate")
      .add("--gradient_accumulation_steps", s.gradient_accumulation_steps, "micro-batches per optimizer step")
      .add("--train_size", s.train_size, "training examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    // Float64 weights: the comparison is exact up to summation order only without mixed precision.
    return acc::run(  // acc
        config, [&](auto& accelerator) { return compare(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<acc::FP32>);
  } catch (const std::exception& e) {
    std::cerr << "gradient_accumulation: " << e.what() << "\n";
    return 1;
  }
}
