#pragma once

#include <acc/detail/torch_compat.hpp>
#include <acc/optim/adamw.hpp>

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_addcdiv.h>
#include <ATen/ops/_foreach_addcmul.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sqrt.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros_like.h>

#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>

namespace acc::optim {

ACC_DECL at::Tensor AdamW::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (const auto& group : param_groups())
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad())
      return torch::optim::AdamW::step(closure);  // rare: the per-parameter loop
  for (auto& group : param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    // Tensors go together when they share the step count (it differs only where some parameter
    // had no gradient), the device and the dtype, as the batched kernels need.
    std::map<std::tuple<int64_t, c10::DeviceType, c10::DeviceIndex, at::ScalarType>, Tensors> batches;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      TORCH_CHECK(!p.grad().is_sparse(), "AdamW does not support sparse gradients");
      auto& state = state_of(p);
      state.step(state.step() + 1);
      auto& batch = batches[{state.step(), p.device().type(), p.device().index(), p.scalar_type()}];
      batch.params.push_back(p);
      batch.grads.push_back(p.grad());
      batch.exp_avgs.push_back(state.exp_avg());
      batch.exp_avg_sqs.push_back(state.exp_avg_sq());
    }
    for (auto& [key, batch] : batches) update(batch, std::get<int64_t>(key), options);
  }
  return loss;
}

ACC_DECL torch::optim::AdamWParamState& AdamW::state_of(const at::Tensor& p) {
  const auto key = compat::optimizer_state_key<std::decay_t<decltype(state())>>(p);
  auto found = state().find(key);
  if (found == state().end()) {
    auto fresh = std::make_unique<torch::optim::AdamWParamState>();
    fresh->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
    fresh->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
    found = state().emplace(key, std::move(fresh)).first;
  }
  return static_cast<torch::optim::AdamWParamState&>(*found->second);
}

ACC_DECL void AdamW::update(const Tensors& t, int64_t step, const torch::optim::AdamWOptions& options) {
  const auto [beta1, beta2] = options.betas();
  if (compat::has_fused_adamw && kernel_ == Kernel::fastest && t.params.front().is_cuda()) {
    const auto steps = at::full({}, static_cast<double>(step), t.params.front().options().dtype(at::kFloat));
    compat::fused_adamw(t.params, t.grads, t.exp_avgs, t.exp_avg_sqs, std::vector<at::Tensor>(t.params.size(), steps),
                        options.lr(), beta1, beta2, options.weight_decay(), options.eps());
    return;
  }
  // The arithmetic of torch::optim::AdamW::step, one operation at a time over all tensors.
  if (options.weight_decay() != 0) at::_foreach_mul_(t.params, 1 - options.lr() * options.weight_decay());
  const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
  at::_foreach_mul_(t.exp_avgs, beta1);
  at::_foreach_add_(t.exp_avgs, t.grads, 1 - beta1);
  at::_foreach_mul_(t.exp_avg_sqs, beta2);
  at::_foreach_addcmul_(t.exp_avg_sqs, t.grads, t.grads, 1 - beta2);
  auto denominators = at::_foreach_sqrt(t.exp_avg_sqs);
  at::_foreach_div_(denominators, std::sqrt(bias_correction2));
  at::_foreach_add_(denominators, options.eps());
  at::_foreach_addcdiv_(t.params, t.exp_avgs, denominators, -options.lr() / bias_correction1);
}

}  // namespace acc::optim
