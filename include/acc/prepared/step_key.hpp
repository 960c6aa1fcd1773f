// The key to the Accelerator's step functions (optimizer_step, optimizer_zero_grad,
// scheduler_steps_per_step): only the prepared optimizer and scheduler can make one, so user code
// steps through them, where gradient accumulation and loss scaling are applied.
#pragma once

namespace acc {

template <class Optimizer, class Owner>
class PreparedOptimizer;
template <class Scheduler, class Owner>
class PreparedScheduler;

namespace detail {
class StepKey {
  StepKey() {}  // user-provided: `StepKey{}` is no aggregate initialization around it
  template <class, class>
  friend class acc::PreparedOptimizer;
  template <class, class>
  friend class acc::PreparedScheduler;
};
}  // namespace detail

}  // namespace acc
