// A prepared optimizer: step() lets the accelerator synchronize gradients (and, with loss
// scaling, unscale or skip) before the wrapped optimizer steps; both step() and zero_grad() do
// nothing on the micro-steps of gradient accumulation.
#pragma once

#include <acc/prepared/step_key.hpp>

#include <memory>
#include <utility>

namespace acc {

template <class Optimizer, class Owner>
class PreparedOptimizer {
 public:
  // `registration` keeps the optimizer in the owner's checkpoints while this object or a copy lives.
  PreparedOptimizer(Optimizer& optimizer, Owner& owner, std::shared_ptr<const void> registration)
      : optimizer_(&optimizer), owner_(&owner), registration_(std::move(registration)) {}

  void step() { owner_->optimizer_step(detail::StepKey(), *optimizer_); }
  void zero_grad() { owner_->optimizer_zero_grad(detail::StepKey(), *optimizer_); }
  // Whether the last step() left the parameters unchanged (an fp16 overflow, for example).
  bool step_was_skipped() const { return owner_->optimizer_step_was_skipped(); }

  Optimizer* operator->() const { return optimizer_; }
  Optimizer& operator*() const { return *optimizer_; }
  Optimizer& unwrap() const { return *optimizer_; }

 private:
  Optimizer* optimizer_;
  Owner* owner_;
  std::shared_ptr<const void> registration_;
};

}  // namespace acc
