// A prepared learning-rate scheduler: steps only when the optimizer really stepped, and, as in
// Python Accelerate, once per process unless batches are split, so the schedule counts samples
// the same way whatever the number of processes.
#pragma once

#include <acc/prepared/step_key.hpp>

#include <memory>
#include <utility>

namespace acc {

template <class Scheduler, class Owner>
class PreparedScheduler {
 public:
  // `registration` keeps the scheduler in the owner's checkpoints while this object or a copy lives.
  PreparedScheduler(Scheduler& scheduler, Owner& owner, std::shared_ptr<const void> registration)
      : scheduler_(&scheduler), owner_(&owner), registration_(std::move(registration)) {}

  void step() {
    if (!owner_->sync_gradients() || owner_->optimizer_step_was_skipped()) return;
    for (int i = 0; i < owner_->scheduler_steps_per_step(detail::StepKey()); ++i) scheduler_->step();
  }

  Scheduler* operator->() const { return scheduler_; }
  Scheduler& operator*() const { return *scheduler_; }
  Scheduler& unwrap() const { return *scheduler_; }

 private:
  Scheduler* scheduler_;
  Owner* owner_;
  std::shared_ptr<const void> registration_;
};

}  // namespace acc
