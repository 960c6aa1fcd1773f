// acc::LocalSGD: Python Accelerate's LocalSGD as a scope. Inside it backward does not all-reduce
// gradients (each process steps on its own), and every local_sgd_steps-th step() replaces each
// parameter by its mean over the processes; leaving the scope averages once more, so that every
// process ends with the same weights. Disabled, or on one process, it does nothing.
//
//   {
//     acc::LocalSGD local_sgd(accelerator, model, /*local_sgd_steps=*/8);
//     for (auto& batch : loader) {
//       auto step = accelerator.accumulate(model);
//       ... accelerator.backward(loss); optimizer.step(); optimizer.zero_grad();
//       local_sgd.step();
//     }
//   }
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/error.hpp>
#include <acc/strategy/strategy.hpp>

#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>

namespace acc {

template <class Accelerator, class Model>
class LocalSGD {
 public:
  LocalSGD(Accelerator& accelerator, Model& model, int64_t local_sgd_steps, bool enabled = true)
      : accelerator_(accelerator),
        model_(model),
        local_sgd_steps_(local_sgd_steps),
        enabled_(enabled && accelerator.num_processes() > 1),
        uncaught_at_start_(std::uncaught_exceptions()) {
    if (local_sgd_steps < 1)
      throw Error("LocalSGD's local_sgd_steps is " + std::to_string(local_sgd_steps) + "; it must be at least 1");
    // A run-time error, not a static_assert: acc::run compiles the training loop for FSDP too.
    if (enabled_ && shards_model_v<typename Accelerator::strategy_type>)
      throw Error(
          "LocalSGD averages whole parameters, but FSDP holds a shard of each on every process: train with "
          "distributed_type MULTI_CPU or MULTI_GPU (DDP), or pass enabled=false");
    // no_sync's scope is not movable: it is made in place through a conversion.
    if (enabled_) no_sync_.emplace(EnterNoSync{this});
  }
  // Averages the parameters a last time, unless the scope is left by an exception (the other
  // processes may not be here to average with).
  ~LocalSGD() noexcept(false) {
    if (enabled_ && std::uncaught_exceptions() == uncaught_at_start_) average();
  }
  LocalSGD(const LocalSGD&) = delete;
  LocalSGD& operator=(const LocalSGD&) = delete;

  // After each optimizer step: every local_sgd_steps-th call averages the parameters.
  void step() {
    ++steps_;
    if (enabled_ && steps_ % local_sgd_steps_ == 0) average();
  }

 private:
  using Scope = decltype(std::declval<Accelerator&>().no_sync(std::declval<Model&>()));
  struct EnterNoSync {
    LocalSGD* self;
    operator Scope() const { return self->accelerator_.no_sync(self->model_); }
  };

  void average() {
    at::NoGradGuard no_grad;
    for (auto& parameter : model_->parameters()) parameter.copy_(accelerator_.reduce(parameter, ReduceOp::mean));
  }

  Accelerator& accelerator_;
  Model& model_;
  int64_t local_sgd_steps_;
  bool enabled_;
  int uncaught_at_start_;
  int64_t steps_ = 0;
  std::optional<Scope> no_sync_;
};

}  // namespace acc
