// The bodies of dispatch/offloaded_weights.hpp.
#pragma once

#include <acc/dispatch/offloaded_weights.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>

#include <set>
#include <string>
#include <utility>

namespace acc::detail {

ACC_DECL OffloadedWeights::OffloadedWeights(const std::vector<UnitTensor>& parameters) {
  std::set<const c10::TensorImpl*> seen;
  for (const auto& p : parameters)
    if (seen.insert(p.tensor.unsafeGetTensorImpl()).second) parameters_.push_back(p);
}

ACC_DECL OffloadedWeights OffloadedWeights::in_memory(const std::vector<UnitTensor>& parameters, bool pin) {
  OffloadedWeights weights(parameters);
  at::NoGradGuard no_grad;
  for (const auto& p : weights.parameters_) {
    auto value = p.tensor.detach().to(at::kCPU);
    weights.values_.push_back(pin ? value.pin_memory() : value);
  }
  return weights;
}

ACC_DECL OffloadedWeights OffloadedWeights::on_disk(const std::vector<UnitTensor>& parameters,
                                                    const std::filesystem::path& file) {
  OffloadedWeights weights(parameters);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : weights.parameters_) tensors.emplace_back(p.name, p.tensor.detach());
  safetensors::save_file(tensors, file, {{"format", "pt"}});
  weights.file_.emplace(file);
  return weights;
}

ACC_DECL void OffloadedWeights::load(c10::Device device) {
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const auto& p = parameters_[i];
    // Pinned host memory copies to the GPU without blocking, ordered on the stream with the forward.
    auto value = file_ ? file_->read(p.name).to(device)
                       : values_[i].to(at::TensorOptions().device(device), /*non_blocking=*/true);
    p.tensor.set_data(value);
  }
}

ACC_DECL void OffloadedWeights::release() {
  at::NoGradGuard no_grad;
  for (const auto& p : parameters_) p.tensor.set_data(at::empty({0}, p.tensor.options().device(at::kCPU)));
}

}  // namespace acc::detail
