// The bodies of big_modeling/materialize.hpp's non-template functions.
#pragma once

#include <acc/big_modeling/materialize.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/variable.h>

#include <mutex>

namespace acc {

ACC_DECL std::vector<std::string> meta_tensor_names(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& p : module.named_parameters())
    if (p.value().is_meta()) names.push_back(p.key());
  for (const auto& b : module.named_buffers())
    if (b.value().is_meta()) names.push_back(b.key());
  return names;
}

ACC_DECL void materialize(torch::nn::Module& module, c10::Device device) {
  if (device.is_meta())
    throw Error(
        "acc::materialize gives meta tensors real storage; it was asked for the meta device itself: name "
        "a real device (at::kCPU, or the accelerator's device())");
  at::NoGradGuard no_grad;
  const auto give_storage = [&](const at::Tensor& t) {
    if (t.is_meta()) detail::assign_in_place(t, at::zeros(t.sizes(), t.options().device(device)));
  };
  for (const auto& p : module.parameters()) give_storage(p);
  for (const auto& b : module.buffers()) give_storage(b);
}

namespace detail {

ACC_DECL void assign_in_place(const at::Tensor& target, const at::Tensor& value) {
  // set_data refuses to move a tensor between the meta device and a real one (their backends
  // differ); offloaded weights go both ways.
  if (!target.is_meta() && !value.is_meta()) {
    target.set_data(value);
    return;
  }
  if (auto* autograd = torch::autograd::impl::get_autograd_meta(target)) {
    std::lock_guard<std::mutex> lock(autograd->mutex_);
    autograd->grad_accumulator_.reset();
  }
  // What set_data does after its check of the backends: the version counter and the autograd
  // metadata (requires_grad, hooks) stay the target's.
  target.unsafeGetTensorImpl()->shallow_copy_from(value.getIntrusivePtr());
}

}  // namespace detail
}  // namespace acc
