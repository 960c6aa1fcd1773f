#pragma once

#include <acc/detail/torch_compat.hpp>
#include <acc/optim/adamw.hpp>

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_addcdiv.h>
#include <ATen/ops/_foreach_addcmul.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sqrt.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros_like.h>

#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>

namespace acc::optim {

ACC_DECL at::Tensor AdamW::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  at::NoGradGuard no_grad;
  if (steps_on_device())
    step_on_device(std::nullopt);
  else
    step_on_host();
  return loss;
}

ACC_DECL void AdamW::step_unless(const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
  if (found_inf.is_cuda() && steps_on_device())
    step_on_device(found_inf);
  else if (found_inf.item<float>() == 0)
    step_on_host();
}

ACC_DECL bool AdamW::steps_on_device() const {
  bool any = false;
  for (const auto& group : param_groups()) {
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad()) return false;
    for (const auto& p : group.params()) {
      if (!fuses(p)) return false;
      any = true;
    }
  }
  return any;
}

ACC_DECL void AdamW::load_learning_rates() {
  for (auto& [key, rate] : learning_rates_) {
    const double wanted = static_cast<const torch::optim::AdamWOptions&>(param_groups()[key.first].options()).lr();
    if (rate.loaded == wanted) continue;
    rate.value.fill_(wanted);
    rate.loaded = wanted;
  }
}

ACC_DECL const at::Tensor& AdamW::learning_rate(std::size_t group, const c10::Device& device) {
  const double wanted = static_cast<const torch::optim::AdamWOptions&>(param_groups()[group].options()).lr();
  auto found = learning_rates_.find({group, device.index()});
  if (found == learning_rates_.end())
    found = learning_rates_
                .emplace(std::make_pair(group, device.index()),
                         DeviceLearningRate{wanted, at::full({}, wanted, at::TensorOptions(device).dtype(at::kFloat))})
                .first;
  auto& rate = found->second;
  if (rate.loaded != wanted) {  // changed since the last step (a scheduler)
    rate.value.fill_(wanted);
    rate.loaded = wanted;
  }
  return rate.value;
}

ACC_DECL void AdamW::step_on_device(const std::optional<at::Tensor>& found_inf) {
  for (std::size_t g = 0; g < param_groups().size(); ++g) {
    auto& group = param_groups()[g];
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    std::map<std::tuple<c10::DeviceIndex, at::ScalarType>, Tensors> batches;  // the fused kernel's groups
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      TORCH_CHECK(!p.grad().is_sparse(), "AdamW does not support sparse gradients");
      auto& state = state_of(p);
      auto found = device_steps_.find(p.unsafeGetTensorImpl());
      if (found == device_steps_.end()) {
        const auto count = at::full({1}, static_cast<double>(state.step()), p.options().dtype(at::kFloat));
        found = device_steps_.emplace(p.unsafeGetTensorImpl(), DeviceStep{p, count}).first;
      }
      auto& batch = batches[{p.device().index(), p.scalar_type()}];
      batch.params.push_back(p);
      batch.grads.push_back(p.grad());
      batch.exp_avgs.push_back(state.exp_avg());
      batch.exp_avg_sqs.push_back(state.exp_avg_sq());
      batch.steps.push_back(found->second.step);
    }
    const auto [beta1, beta2] = options.betas();
    for (auto& [key, batch] : batches) {
      at::_foreach_add_(batch.steps, 1.0);
      compat::fused_adamw(batch.params, batch.grads, batch.exp_avgs, batch.exp_avg_sqs, batch.steps,
                          learning_rate(g, batch.params.front().device()), beta1, beta2, options.weight_decay(),
                          options.eps(), found_inf);
      // Counted as taken, then taken back where skipped: as Python's fused AdamW under a GradScaler.
      if (found_inf) at::_foreach_sub_(batch.steps, std::vector<at::Tensor>(batch.steps.size(), *found_inf));
    }
  }
}

ACC_DECL void AdamW::step_on_host() {
  settle_steps();
  for (const auto& group : param_groups())
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad()) {
      torch::optim::AdamW::step();  // rare: the per-parameter loop
      return;
    }
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
}

ACC_DECL void AdamW::settle_steps() {
  for (const auto& [impl, device] : device_steps_)
    state_of(device.param).step(static_cast<int64_t>(device.step.item<float>()));
  device_steps_.clear();
}

ACC_DECL void AdamW::save(torch::serialize::OutputArchive& archive) const {
  // The device's counts are the true ones; the states' are a copy made when needed.
  const_cast<AdamW*>(this)->settle_steps();
  torch::optim::AdamW::save(archive);
}

ACC_DECL void AdamW::load(torch::serialize::InputArchive& archive) {
  torch::optim::AdamW::load(archive);
  device_steps_.clear();  // the loaded counts are the true ones now
}

ACC_DECL bool AdamW::fuses(const at::Tensor& p) const {
  return compat::has_fused_adamw && kernel_ == Kernel::fastest && p.is_cuda();
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
