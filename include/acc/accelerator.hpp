// acc::Accelerator<Strategy, Precision, Sampler>: composes the three policies, prepares a user's
// model, optimizer, data loaders and schedulers for them, and drives backward and the step. What
// depends on the strategy alone (collectives, accumulation scopes, checkpoints, trackers) is its
// base, detail::AcceleratorBase<Strategy> (acc/accelerator_base.hpp).
#pragma once

#include <acc/accelerator_base.hpp>
#include <acc/accelerator_options.hpp>
#include <acc/data/dataloader.hpp>
#include <acc/data/sampler.hpp>
#include <acc/error.hpp>
#include <acc/precision/fp32.hpp>
#include <acc/precision/grad_scaler.hpp>
#include <acc/precision/precision.hpp>
#include <acc/prepared/model.hpp>
#include <acc/prepared/optimizer.hpp>
#include <acc/prepared/step_key.hpp>
#include <acc/strategy/single.hpp>
#include <acc/strategy/strategy.hpp>

#include <ATen/ops/empty_like.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {

namespace detail {
template <class T, class = void>
struct is_module_holder : std::false_type {};
template <class T>
struct is_module_holder<T, std::void_t<typename T::ContainedType>>
    : std::is_base_of<torch::nn::ModuleHolder<typename T::ContainedType>, T> {};

template <class T>
struct is_data_loader : std::false_type {};
template <class D, class C, class S>
struct is_data_loader<DataLoader<D, C, S>> : std::true_type {};
// A loss scaler that can leave its overflow flag on the device, and an optimizer that skips on it.
template <class Scaler, class Optimizer, class Comm, class = void>
struct skips_on_device : std::false_type {};
template <class Scaler, class Optimizer, class Comm>
struct skips_on_device<Scaler, Optimizer, Comm,
                       std::void_t<decltype(std::declval<Optimizer&>().step_unless(
                           std::declval<Scaler&>().found_inf_on_any_rank(std::declval<Comm&>())))>> : std::true_type {};
template <class Scaler, class Optimizer, class Comm>
inline constexpr bool skips_on_device_v = skips_on_device<Scaler, Optimizer, Comm>::value;
}  // namespace detail

template <class Strategy = Single, class Precision = FP32, class Sampler = Sequential>
class Accelerator : public detail::AcceleratorBase<Strategy> {
  static_assert(
      check_precision_policy<Precision>(),
      "Accelerator's second parameter must be a precision policy: acc::FP32, acc::BF16, acc::FP16, "
      "acc::FP8, acc::BF16True or acc::FP16True (see include/acc/precision/precision.hpp for what a precision "
      "provides)");
  static_assert(is_sampler_policy_v<Sampler>,
                "Accelerator's third parameter must be a sampler policy: acc::Sequential or acc::Shuffled "
                "(see include/acc/data/sampler.hpp for what a sampler provides)");
  using Base = detail::AcceleratorBase<Strategy>;

 public:
  using strategy_type = Strategy;
  using precision_type = Precision;
  using sampler_type = Sampler;

  // The options the launcher's variables set (AcceleratorOptions::from_environment).
  Accelerator() : Accelerator(AcceleratorOptions::from_environment()) {}
  explicit Accelerator(AcceleratorOptions options)
      : Base(std::move(options), Precision::name, Sampler::name, Precision::compute_dtype),
        scaler_(options_.grad_scaler(), device_) {
    Precision::check_device(device_);
  }

  // Prepares each object for this accelerator and returns them in the same order: a module holder
  // becomes a PreparedModel (moved to the device), an optimizer a PreparedOptimizer, an
  // acc::DataLoader this process's sharded, device-placed loader, an LR scheduler a
  // PreparedScheduler. Optimizers and schedulers are kept by reference: pass them as lvalues.
  // Checkpoints hold the prepared objects while they live (an optimizer or scheduler while its
  // prepared object or a copy does). Preparing a model again replaces what the strategy made
  // for it (DDP's gradient buckets); see free_memory to start over.
  template <class... Objects>
  auto prepare(Objects&&... objects) {
    static_assert(sizeof...(Objects) > 0, "prepare() needs at least one object");
    if constexpr (sizeof...(Objects) == 1)
      return prepare_one(std::forward<Objects>(objects)...);
    else  // a braced list runs left to right: models are placed before their optimizers are seen
      return std::tuple<decltype(prepare_one(std::forward<Objects>(objects)))...>{
          prepare_one(std::forward<Objects>(objects))...};
  }

  // Backward of the loss (divided by gradient_accumulation_steps), then, on a synchronizing step,
  // gradients averaged across processes.
  void backward(const at::Tensor& loss) { this->backward_scaled(scaler_.scale(this->loss_for_backward(loss))); }

  // Clips the gradients' total norm and returns that norm, after the gradients are synchronized
  // and, with loss scaling, unscaled (once per step, however often this is called).
  // With FSDP the norm is that of all shards on all ranks, and `parameters` stand for the model's.
  double clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm, double norm_type = 2.0) {
    unscale_gradients(parameters);
    if constexpr (shards_model_v<Strategy>)
      return strategy_.clip_grad_norm_(max_norm, norm_type);
    else if constexpr (detail::clips_parameters<Strategy>::value)
      return strategy_.clip_grad_norm_(parameters, max_norm, norm_type);
    else
      return torch::nn::utils::clip_grad_norm_(parameters, max_norm, norm_type);
  }
  void clip_grad_value_(const std::vector<at::Tensor>& parameters, double clip_value) {
    unscale_gradients(parameters);
    torch::nn::utils::clip_grad_value_(this->trained(parameters), clip_value);
  }

  // Synchronizes the gradients and, with loss scaling, divides them by the scale; once per step.
  void unscale_gradients(const std::vector<at::Tensor>& parameters) {
    this->synchronize_gradients();
    unscale_once([&] { return parameters; });
  }

  // The loss scaler of FP16 (nullptr for the precisions without acc::GradScaler), for its scale
  // and its state.
  GradScaler* scaler() {
    if constexpr (uses_grad_scaler_v<Precision>)
      return &scaler_;
    else
      return nullptr;
  }

  // The scope the precision runs the forward in (autocast, or nothing), for code outside the
  // prepared model's forward.
  typename Precision::forward_scope autocast() const { return typename Precision::forward_scope(device_); }

  // The config's name of this Accelerator's precision, as Python's accelerator.mixed_precision
  // spells it ("bf16", ...): for code inside acc::run's generic function.
  static std::string mixed_precision() { return std::string(Precision::name); }

  // --- Checkpoints (see include/acc/checkpoint/checkpointer.hpp for the directory's contents).

  // Saves everything needed to resume bit for bit: the prepared models, optimizers, schedulers
  // and data loaders' positions, the loss scaler, every process's random generators, the
  // gradient accumulation step and the registered objects. Atomic: `dir` holds the previous
  // checkpoint until the new one is complete. Without a directory, numbers the checkpoint under
  // the ProjectConfiguration's project_dir. Every process calls it; returns the directory.
  std::filesystem::path save_state(const std::filesystem::path& dir = {}) { return checkpoints_.save(dir, scaler()); }

  // Restores a checkpoint into the objects prepared (and registered) as when it was saved; each
  // prepared loader's next iteration continues at the saved epoch and batch. Without a
  // directory, loads the newest numbered checkpoint. Checks the whole checkpoint first: a bad
  // one is an acc::Error naming the file and the problem, and changes nothing.
  std::filesystem::path load_state(const std::filesystem::path& dir = {}) { return checkpoints_.load(dir, scaler()); }

  // Called by the prepared optimizer only (it holds the key).
  // Between synchronizing steps (gradient accumulation) the optimizer neither steps nor zeroes.
  // With loss scaling, a step whose gradients hold inf or NaN on any process is skipped on all.
  template <class Optimizer>
  void optimizer_step(detail::StepKey, Optimizer& optimizer) {
    if (!sync_gradients_) return;
    this->synchronize_gradients();
    unscale_once([&] {
      std::vector<at::Tensor> parameters;
      for (const auto& group : optimizer.param_groups())
        for (const auto& p : group.params()) parameters.push_back(p);
      return parameters;
    });
    skips_on_device_ = false;
    using Comm = std::decay_t<decltype(strategy_.comm())>;
    if constexpr (detail::skips_on_device_v<typename Precision::loss_scaler, Optimizer, Comm>) {
      if (device_.is_cuda()) {  // overflow checked and the step skipped on the GPU: no host sync
        const auto& found_inf = scaler_.found_inf_on_any_rank(strategy_.comm());
        optimizer.step_unless(found_inf);
        // Into a tensor of its own, made once: a captured step's replays write it where the host looks.
        if (!skipped_on_device_.defined()) skipped_on_device_ = at::empty_like(found_inf);
        skipped_on_device_.copy_(found_inf);
        skips_on_device_ = true;
        scaler_.update();
        unscaled_ = false;
        return;
      }
    }
    step_skipped_ = scaler_.skips_step(strategy_.comm());
    if (!step_skipped_) optimizer.step();
    scaler_.update();
    unscaled_ = false;
  }
  template <class Optimizer>
  void optimizer_zero_grad(detail::StepKey, Optimizer& optimizer) {
    if (!sync_gradients_) return;
    strategy_.zero_grad(optimizer);
    unscaled_ = false;  // the next gradients are scaled again
  }

 private:
  using Base::checkpoints_;
  using Base::device_;
  using Base::options_;
  using Base::skipped_on_device_;
  using Base::skips_on_device_;
  using Base::step_skipped_;
  using Base::strategy_;
  using Base::sync_gradients_;

  template <class Object>
  auto prepare_one(Object&& object) {
    using T = std::decay_t<Object>;
    constexpr bool is_lvalue = std::is_lvalue_reference_v<Object>;
    if constexpr (detail::is_module_holder<T>::value) {
      T module = object;
      // Before the strategy buckets or shards the parameters.
      if constexpr (detail::has_precision_options<Precision>::value)
        Precision::prepare_module(*module, Base::template options_part<typename Precision::options_type>(options_));
      else
        Precision::prepare_module(*module);
      this->prepare_model(module.ptr());
      return PreparedModel<T, Accelerator>(std::move(module), *this);
    } else if constexpr (std::is_base_of_v<torch::optim::Optimizer, T>) {
      static_assert(is_lvalue, "pass the optimizer to prepare() as an lvalue: the prepared optimizer refers to it");
      return PreparedOptimizer<T, Accelerator>(object, *this, this->prepare_optimizer(object));
    } else if constexpr (std::is_base_of_v<torch::optim::LRScheduler, T>) {
      static_assert(is_lvalue, "pass the scheduler to prepare() as an lvalue: the prepared scheduler refers to it");
      return this->prepare_scheduler(object);
    } else if constexpr (detail::is_data_loader<T>::value) {
      return this->template prepare_loader<Sampler>(object);
    } else {
      static_assert(!std::is_same_v<T, T>,
                    "prepare() takes module holders (torch::nn::ModuleHolder, e.g. TORCH_MODULE types), "
                    "torch::optim optimizers and LR schedulers, and acc::DataLoader");
    }
  }

  // Lets the loss scaler divide the gradients of the parameters that `parameters()` returns by
  // its scale, once per step; a precision without loss scaling never asks for them.
  template <class Parameters>
  void unscale_once(Parameters&& parameters) {
    if (unscaled_) return;
    scaler_.unscale([&] {
      std::vector<at::Tensor> grads;
      for (const auto& p : this->trained(parameters()))
        if (p.grad().defined()) grads.push_back(p.grad());
      return grads;
    });
    unscaled_ = true;
  }

  typename Precision::loss_scaler scaler_;
  bool unscaled_ = false;
};

}  // namespace acc
