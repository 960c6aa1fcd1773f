// Training whose result two runs can compare weight for weight: float64, SGD, the training set
// in index order. gradient_accumulation and automatic_gradient_accumulation train once with k
// micro-batches of b examples per optimizer step and once with batches of k x b, and check that
// both end with the same weights, up to the order of float64 sums.
#pragma once

#include "points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace examples {

struct Float64Training {
  int64_t epochs = 2;
  double lr = 0.1;
  int64_t train_size = 512;
  int64_t seed = 0;
};

// The largest weight difference that summation order explains. The two ways split the sum over
// a large batch of the gradient differently: float64 rounding, 1e-16 relative per addition over
// some hundred terms, grown by SGD's steps to well below 1e-10 of the weights (which are of order
// 1). A wrong accumulation (a missing division by k, a step per micro-batch) moves them by about
// the learning rate, 0.1.
inline constexpr double kSummationOrderTolerance = 1e-10;

// Both ways see the same large batches only when each process's share of the training set splits
// into whole ones: in index order, the k micro-batches of one step on all processes hold the
// examples of one large batch on each.
inline void require_whole_large_batches(const Float64Training& s, int64_t large_batch, int64_t processes) {
  if (s.train_size % (large_batch * processes) != 0)
    throw acc::Error("--train_size (" + std::to_string(s.train_size) + ") must be a multiple of " +
                     std::to_string(large_batch) + " x " + std::to_string(processes) +
                     " processes, so that both ways see the same large batches");
}

// The weights after training with micro-batches of `batch_size` per process, `accumulation` of
// them per optimizer step. `before_forward(inputs)` runs ahead of each forward pass.
template <class Accelerator, class BeforeForward>
std::vector<at::Tensor> train_float64(Accelerator& accelerator, const Float64Training& s, int64_t batch_size,
                                      int64_t accumulation, BeforeForward&& before_forward) {
  accelerator.free_memory();                              // acc: forget the previous run's objects
  accelerator.gradient_accumulation_steps(accumulation);  // acc
  accelerator.set_seed(static_cast<uint64_t>(s.seed));
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  net->to(at::kDouble);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(s.lr));
  auto [model, optimizer, loader] = accelerator.prepare(  // acc
      net, opt,
      acc::DataLoader(Points(s.train_size, static_cast<uint64_t>(s.seed) + 1),
                      acc::DataLoaderOptions(batch_size).shuffle(false)));
  for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
    loader.set_epoch(epoch);
    for (auto& batch : loader) {
      auto step = accelerator.accumulate(model);  // acc
      const auto inputs = batch.data.to(at::kDouble);
      before_forward(inputs);
      auto loss = torch::nn::functional::cross_entropy(model(inputs), batch.target);
      accelerator.backward(loss);  // acc: divides by the accumulation steps; all-reduces on the last
      optimizer.step();            // steps only when accelerator.sync_gradients()
      optimizer.zero_grad();
    }
  }
  std::vector<at::Tensor> weights;
  for (const auto& p : net->parameters()) weights.push_back(p.detach().clone());
  return weights;
}

inline double largest_difference(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double largest = 0;
  for (std::size_t i = 0; i < a.size(); ++i) largest = std::max(largest, acc::item<double>((a[i] - b[i]).abs().max()));
  return largest;
}

}  // namespace examples
