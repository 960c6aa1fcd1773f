// Learning-rate schedules with warm-up, as transformers' get_*_schedule_with_warmup make them for
// Python (Accelerate users take theirs from there), as libtorch LR schedulers:
//
//   ConstantWithWarmupSchedule   0 -> lr over warmup_steps, then lr
//   LinearSchedule               warm-up, then linearly down to 0 at total_steps
//   CosineSchedule               warm-up, then a half-cosine (num_cycles 0.5) down to 0 at total_steps
//   CosineWithRestartsSchedule   warm-up, then num_cycles half-cosines, each starting again from lr
//   PolynomialSchedule           warm-up, then (lr - lr_end) * remaining^power + lr_end, lr_end after
//   InverseSqrtSchedule          warm-up, then lr / sqrt((step + timescale - warmup_steps) / timescale)
//
//   acc::optim::LinearSchedule sched(optimizer, acc::optim::WarmupOptions().warmup_steps(100).total_steps(1000));
//
// Each computes the factor transformers' lambda computes, with the same double operations in the
// same order, and steps as Python's LambdaLR: building the schedule sets every parameter group's
// learning rate to base_lr * factor(0), the base lrs being the groups' lrs at that moment, and the
// k-th step() sets base_lr * factor(k). A step counts optimizer steps, not epochs.
//
// save()/load() keep the whole state (the step count, the base lrs, and the schedule's kind and
// parameters to check against), and Accelerator::save_state/load_state use them; a load into a
// schedule whose parameters differ is an acc::Error (see WarmupSchedule::check).
#pragma once

#include <acc/detail/linkage.hpp>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace acc::optim {

// The base of the schedules here: a libtorch LRScheduler whose learning rates are the base lrs
// times a factor of the step count, and whose whole state can be saved and loaded. A schedule of
// one's own derives from it with a kind, its parameters and its factor.
class WarmupSchedule : public torch::optim::LRScheduler {
 public:
  // A number the factor depends on, which a loaded state must have as well (steps are exact in a double).
  struct Parameter {
    std::string name;
    double value;
  };
  // The factor of the base lrs after `step` steps.
  using Factor = std::function<double(const WarmupSchedule& schedule, int64_t step)>;

  // How many times step() was called (Python's last_epoch).
  int64_t step_count() const { return static_cast<int64_t>(step_count_); }
  // Every parameter group's learning rate when the schedule was built (or as loaded).
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  // The optimizer's default learning rate when the schedule was built (or as loaded): transformers'
  // polynomial schedule divides by it.
  double default_lr() const { return default_lr_; }
  // "linear", "cosine", ...: the kind a saved state is checked against.
  const std::string& kind() const { return kind_; }
  const std::vector<Parameter>& parameters() const { return parameters_; }

  double factor(int64_t step) const { return factor_(*this, step); }
  // The learning rates after `step` steps: base_lr * factor(step) for every group.
  std::vector<double> lrs(int64_t step) const;

  // Writes "step_count" (what any libtorch scheduler's checkpoint holds), "schedule" (the kind),
  // "base_lrs", "default_lr" and "parameters" (one double per parameter).
  virtual void save(torch::serialize::OutputArchive& archive) const;
  // Throws acc::Error, changing nothing, when `archive` does not hold a state this schedule can
  // take: another kind, another number of parameter groups, or a parameter with another value. A
  // state of only a step count (a plain scheduler's checkpoint, or one saved before these
  // schedules kept more) is accepted.
  //
  // Why differing parameters are an error rather than restored or ignored: as in Python, where
  // they are the arguments of the schedule's lambda, they belong to the program, not to its state.
  // Restoring them would train on another schedule than the program says; keeping the program's
  // would make the learning rate jump at the resume. Both hide what is usually a mistake (a
  // total_steps computed from another number of epochs or processes), so the load stops and names
  // the parameter: build the schedule with the saved values, or start it afresh. The base lrs and
  // the default lr were taken from the optimizer, whose lrs a checkpoint restores too: they are
  // state, restored as Python's LambdaLR.load_state_dict restores base_lrs.
  virtual void check(torch::serialize::InputArchive& archive) const;
  // check(), then the step count, base lrs and default lr of `archive` (only the step count from a
  // state of a step count alone); sets the optimizer's learning rates to lrs(step_count()), which a
  // checkpoint's optimizer state holds already, so that a schedule loaded alone continues as well.
  virtual void load(torch::serialize::InputArchive& archive);

 protected:
  // Takes the base lrs and default lr from `optimizer` and sets its lrs to lrs(0).
  WarmupSchedule(torch::optim::Optimizer& optimizer, std::string kind, std::vector<Parameter> parameters,
                 Factor factor);

  // For LRScheduler::step(): the lrs after one more step.
  std::vector<double> get_lrs() override { return lrs(step_count() + 1); }

 private:
  void set_lrs(const std::vector<double>& lrs);

  torch::optim::Optimizer& scheduled_;  // LRScheduler's own reference is private
  std::string kind_;
  std::vector<Parameter> parameters_;
  Factor factor_;
  std::vector<double> base_lrs_;
  double default_lr_;
};

// Warm-up and the length of the whole schedule, both in scheduler steps (a prepared scheduler steps
// once per process per optimizer step unless batches are split, as in Python Accelerate).
struct WarmupOptions {
  // Steps over which the factor rises linearly from 0 to 1 (step / warmup_steps).
  TORCH_ARG(int64_t, warmup_steps) = 0;
  // The step at which the decay reaches its end; required.
  TORCH_ARG(int64_t, total_steps) = 0;
};

struct CosineOptions {
  TORCH_ARG(int64_t, warmup_steps) = 0;
  TORCH_ARG(int64_t, total_steps) = 0;
  // Waves of the cosine between warmup_steps and total_steps: 0.5 goes from 1 down to 0 once.
  TORCH_ARG(double, num_cycles) = 0.5;
};

struct CosineWithRestartsOptions {
  TORCH_ARG(int64_t, warmup_steps) = 0;
  TORCH_ARG(int64_t, total_steps) = 0;
  // Half-cosines from 1 to 0 between warmup_steps and total_steps (hard restarts: num_cycles - 1).
  TORCH_ARG(int64_t, num_cycles) = 1;
};

struct PolynomialOptions {
  TORCH_ARG(int64_t, warmup_steps) = 0;
  TORCH_ARG(int64_t, total_steps) = 0;
  // The learning rate reached at total_steps and kept after it; below the optimizer's default lr.
  TORCH_ARG(double, lr_end) = 1e-7;
  TORCH_ARG(double, power) = 1.0;
};

struct InverseSqrtOptions {
  TORCH_ARG(int64_t, warmup_steps) = 0;
  // Default: warmup_steps, or 10000 without warm-up (transformers' default).
  TORCH_ARG(std::optional<int64_t>, timescale) = std::nullopt;
};

// transformers' get_constant_schedule_with_warmup.
class ConstantWithWarmupSchedule : public WarmupSchedule {
 public:
  ConstantWithWarmupSchedule(torch::optim::Optimizer& optimizer, int64_t warmup_steps);
};

// transformers' get_linear_schedule_with_warmup.
class LinearSchedule : public WarmupSchedule {
 public:
  LinearSchedule(torch::optim::Optimizer& optimizer, const WarmupOptions& options);
};

// transformers' get_cosine_schedule_with_warmup.
class CosineSchedule : public WarmupSchedule {
 public:
  CosineSchedule(torch::optim::Optimizer& optimizer, const CosineOptions& options);
};

// transformers' get_cosine_with_hard_restarts_schedule_with_warmup.
class CosineWithRestartsSchedule : public WarmupSchedule {
 public:
  CosineWithRestartsSchedule(torch::optim::Optimizer& optimizer, const CosineWithRestartsOptions& options);
};

// transformers' get_polynomial_decay_schedule_with_warmup. As there, the decay is computed on the
// optimizer's default lr (its defaults(), not the groups' lrs) and scaled onto each group's base
// lr; lr_end must be below that default lr.
class PolynomialSchedule : public WarmupSchedule {
 public:
  PolynomialSchedule(torch::optim::Optimizer& optimizer, const PolynomialOptions& options);
};

// transformers' get_inverse_sqrt_schedule.
class InverseSqrtSchedule : public WarmupSchedule {
 public:
  InverseSqrtSchedule(torch::optim::Optimizer& optimizer, const InverseSqrtOptions& options);
};

}  // namespace acc::optim

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/optim/impl/schedules.ipp>
#endif
