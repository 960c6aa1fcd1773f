// The bodies of dispatch/offloaded_weights.hpp.
#pragma once

#include <acc/big_modeling/materialize.hpp>
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
    // Loaded by acc::load_checkpoint_and_dispatch straight into pinned memory: no second copy.
    weights.values_.push_back(pin && !value.is_pinned() ? value.pin_memory() : value);
  }
  return weights;
}

ACC_DECL OffloadedWeights OffloadedWeights::on_disk(const std::vector<UnitTensor>& parameters,
                                                    const std::filesystem::path& file) {
  OffloadedWeights weights(parameters);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : weights.parameters_) tensors.emplace_back(p.name, p.tensor.detach());
  safetensors::save_file(tensors, file, {{"format", "pt"}});
  const auto written = std::make_shared<const safetensors::File>(file);
  for (const auto& p : weights.parameters_) weights.stored_.push_back({written, p.name});
  return weights;
}

ACC_DECL OffloadedWeights OffloadedWeights::in_files(const std::vector<UnitTensor>& parameters,
                                                     const std::vector<Stored>& stored) {
  OffloadedWeights weights(parameters);
  for (const auto& p : weights.parameters_) {
    std::size_t i = 0;
    while (parameters[i].tensor.unsafeGetTensorImpl() != p.tensor.unsafeGetTensorImpl()) ++i;
    weights.stored_.push_back(stored.at(i));
  }
  return weights;
}

ACC_DECL void OffloadedWeights::load(c10::Device device) {
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const auto& p = parameters_[i];
    // Pinned host memory copies to the GPU without blocking, ordered on the stream with the forward.
    auto value = stored_.empty() ? values_[i].to(at::TensorOptions().device(device), /*non_blocking=*/true)
                                 : stored_[i].file->read(stored_[i].key).to(device, p.tensor.scalar_type());
    assign_in_place(p.tensor, value);
  }
}

ACC_DECL void OffloadedWeights::release() {
  at::NoGradGuard no_grad;
  for (const auto& p : parameters_) assign_in_place(p.tensor, at::empty({0}, p.tensor.options().device(at::kCPU)));
}

}  // namespace acc::detail
