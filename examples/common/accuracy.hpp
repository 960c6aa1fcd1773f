// The fraction of an evaluation loader's examples that a model classifies right, counted over
// every process: gather_for_metrics brings each example exactly once to every process.
#pragma once

#include <acc/ops/item.hpp>

#include <ATen/ops/cat.h>
#include <ATen/core/grad_mode.h>

#include <vector>

namespace examples {

template <class Accelerator, class Model, class Loader>
double accuracy(Accelerator& accelerator, Model& model, Loader& loader) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> hits;
  for (auto& batch : loader) {
    const auto hit = model(batch.data).argmax(1).eq(batch.target).to(at::kLong);  // Gloo gathers no bool tensors
    hits.push_back(accelerator.gather_for_metrics(hit));
  }
  const auto all = at::cat(hits);
  return acc::item<double>(all.sum()) / static_cast<double>(all.numel());
}

}  // namespace examples
