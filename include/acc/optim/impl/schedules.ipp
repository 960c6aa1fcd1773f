#pragma once

#include <acc/error.hpp>
#include <acc/optim/schedules.hpp>

#include <ATen/core/ivalue.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

namespace acc::detail {

inline constexpr double schedule_pi = 3.141592653589793;  // Python's math.pi

// The warm-up of every transformers schedule: float(step) / float(max(1, warmup_steps)).
ACC_DECL double warmup_factor(int64_t step, int64_t warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
}

// Python's float x % y: the result takes the sign of y.
ACC_DECL double python_float_mod(double x, double y) {
  double mod = std::fmod(x, y);
  if (mod != 0) {
    if ((y < 0) != (mod < 0)) mod += y;
  } else {
    mod = std::copysign(0.0, y);
  }
  return mod;
}

// The shortest text that reads back as `value` (1000, 0.5, 1e-07).
ACC_DECL std::string schedule_number(double value) {
  char text[64];
  return std::string(text, std::to_chars(text, text + sizeof text, value).ptr);
}

// Checks the steps of a schedule's options and lists them with its other parameters.
ACC_DECL std::vector<optim::WarmupSchedule::Parameter> schedule_parameters(
    const char* schedule, int64_t warmup_steps, std::optional<int64_t> total_steps,
    std::vector<optim::WarmupSchedule::Parameter> others = {}) {
  if (warmup_steps < 0)
    throw Error(std::string(schedule) + ": warmup_steps is " + std::to_string(warmup_steps) +
                "; it must be 0 or more");
  std::vector<optim::WarmupSchedule::Parameter> parameters{{"warmup_steps", static_cast<double>(warmup_steps)}};
  if (total_steps) {
    // transformers does not check, and its schedules then end at once: lr 0 from the first step.
    if (*total_steps <= 0)
      throw Error(std::string(schedule) + " needs total_steps, the number of scheduler steps of the whole training (" +
                  std::to_string(*total_steps) + " given), e.g. .warmup_steps(100).total_steps(10000)");
    parameters.push_back({"total_steps", static_cast<double>(*total_steps)});
  }
  for (auto& p : others) parameters.push_back(std::move(p));
  return parameters;
}

}  // namespace acc::detail

namespace acc::optim {

ACC_DECL WarmupSchedule::WarmupSchedule(torch::optim::Optimizer& optimizer, std::string kind,
                                        std::vector<Parameter> parameters, Factor factor)
    : torch::optim::LRScheduler(optimizer),
      scheduled_(optimizer),
      kind_(std::move(kind)),
      parameters_(std::move(parameters)),
      factor_(std::move(factor)),
      base_lrs_(get_current_lrs()),
      default_lr_(optimizer.defaults().get_lr()) {
  step_count_ = 0;  // not initialized by LRScheduler in every libtorch version
  set_lrs(lrs(0));  // as Python's LambdaLR does when it is built
}

ACC_DECL std::vector<double> WarmupSchedule::lrs(int64_t step) const {
  const double f = factor(step);
  std::vector<double> lrs;
  lrs.reserve(base_lrs_.size());
  for (const double base_lr : base_lrs_) lrs.push_back(base_lr * f);  // LambdaLR: base_lr * lmbda(last_epoch)
  return lrs;
}

ACC_DECL void WarmupSchedule::set_lrs(const std::vector<double>& lrs) {
  auto& groups = scheduled_.param_groups();
  for (std::size_t i = 0; i < groups.size() && i < lrs.size(); ++i) groups[i].options().set_lr(lrs[i]);
}

ACC_DECL void WarmupSchedule::save(torch::serialize::OutputArchive& archive) const {
  archive.write("step_count", c10::IValue(step_count()));
  archive.write("schedule", c10::IValue(kind_));
  archive.write("base_lrs", c10::IValue(base_lrs_));
  archive.write("default_lr", c10::IValue(default_lr_));
  torch::serialize::OutputArchive parameters;
  for (const auto& p : parameters_) parameters.write(p.name, c10::IValue(p.value));
  archive.write("parameters", parameters);
}

ACC_DECL void WarmupSchedule::check(torch::serialize::InputArchive& archive) const {
  using Count = std::decay_t<decltype(step_count_)>;
  c10::IValue value;
  archive.read("step_count", value);
  if (!value.isInt() || value.toInt() < 0 ||
      static_cast<uint64_t>(value.toInt()) > static_cast<uint64_t>(std::numeric_limits<Count>::max()))
    throw Error("its step_count is not a step count");
  if (!archive.try_read("schedule", value)) return;  // a step count alone
  const auto self = "this " + kind_ + " schedule";
  if (!value.isString()) throw Error("its \"schedule\" is not the name of a schedule");
  if (value.toStringRef() != kind_)
    throw Error("it holds the state of a " + value.toStringRef() + " schedule, and " + self + " was to load it");
  archive.read("base_lrs", value);
  if (!value.isDoubleList()) throw Error("its base_lrs are not a list of numbers");
  const auto saved_groups = value.toDoubleList().size();
  if (saved_groups != base_lrs_.size())
    throw Error("it holds the learning rates of " + std::to_string(saved_groups) + " parameter groups, and " + self +
                "'s optimizer has " + std::to_string(base_lrs_.size()));
  archive.read("default_lr", value);
  if (!value.isDouble()) throw Error("its default_lr is not a number");
  torch::serialize::InputArchive saved;
  archive.read("parameters", saved);
  for (const auto& p : parameters_) {
    if (!saved.try_read(p.name, value) || !value.isDouble())
      throw Error("it has no parameter " + p.name + ", which " + self + " has");
    if (value.toDouble() != p.value)
      throw Error("it was saved with " + p.name + " " + detail::schedule_number(value.toDouble()) + ", and " + self +
                  " has " + p.name + " " + detail::schedule_number(p.value) +
                  ": build the schedule with the saved parameters to resume it, or start it afresh without load_state");
  }
}

ACC_DECL void WarmupSchedule::load(torch::serialize::InputArchive& archive) {
  check(archive);
  c10::IValue value;
  archive.read("step_count", value);
  const auto steps = value.toInt();
  if (archive.try_read("schedule", value)) {
    archive.read("base_lrs", value);
    base_lrs_ = value.toDoubleVector();
    archive.read("default_lr", value);
    default_lr_ = value.toDouble();
  }
  step_count_ = static_cast<std::decay_t<decltype(step_count_)>>(steps);
  set_lrs(lrs(step_count()));
}

// The factors below are transformers' lambdas (src/transformers/optimization.py), with the same
// double operations in the same order; Python's int / int is a correctly rounded division, as is
// the division of the two doubles that represent those ints exactly.

ACC_DECL ConstantWithWarmupSchedule::ConstantWithWarmupSchedule(torch::optim::Optimizer& optimizer,
                                                                int64_t warmup_steps)
    : WarmupSchedule(optimizer, "constant_with_warmup",
                     detail::schedule_parameters("ConstantWithWarmupSchedule", warmup_steps, std::nullopt),
                     [warmup = warmup_steps](const WarmupSchedule&, int64_t step) {
                       if (step < warmup) return detail::warmup_factor(step, warmup);
                       return 1.0;
                     }) {}

ACC_DECL LinearSchedule::LinearSchedule(torch::optim::Optimizer& optimizer, const WarmupOptions& options)
    : WarmupSchedule(optimizer, "linear",
                     detail::schedule_parameters("LinearSchedule", options.warmup_steps(), options.total_steps()),
                     [warmup = options.warmup_steps(), total = options.total_steps()](const WarmupSchedule&,
                                                                                        int64_t step) {
                       if (step < warmup) return detail::warmup_factor(step, warmup);
                       return std::max(0.0, static_cast<double>(total - step) /
                                                static_cast<double>(std::max<int64_t>(1, total - warmup)));
                     }) {}

ACC_DECL CosineSchedule::CosineSchedule(torch::optim::Optimizer& optimizer, const CosineOptions& options)
    : WarmupSchedule(optimizer, "cosine",
                     detail::schedule_parameters("CosineSchedule", options.warmup_steps(), options.total_steps(),
                                                 {{"num_cycles", options.num_cycles()}}),
                     [warmup = options.warmup_steps(), total = options.total_steps(),
                      cycles = options.num_cycles()](const WarmupSchedule&, int64_t step) {
                       if (step < warmup) return detail::warmup_factor(step, warmup);
                       const double progress = static_cast<double>(step - warmup) /
                                               static_cast<double>(std::max<int64_t>(1, total - warmup));
                       return std::max(0.0, 0.5 * (1.0 + std::cos(detail::schedule_pi * cycles * 2.0 * progress)));
                     }) {}

ACC_DECL CosineWithRestartsSchedule::CosineWithRestartsSchedule(torch::optim::Optimizer& optimizer,
                                                                const CosineWithRestartsOptions& options)
    : WarmupSchedule(optimizer, "cosine_with_restarts",
                     detail::schedule_parameters("CosineWithRestartsSchedule", options.warmup_steps(),
                                                 options.total_steps(),
                                                 {{"num_cycles", static_cast<double>(options.num_cycles())}}),
                     [warmup = options.warmup_steps(), total = options.total_steps(),
                      cycles = options.num_cycles()](const WarmupSchedule&, int64_t step) {
                       if (step < warmup) return detail::warmup_factor(step, warmup);
                       const double progress = static_cast<double>(step - warmup) /
                                               static_cast<double>(std::max<int64_t>(1, total - warmup));
                       if (progress >= 1.0) return 0.0;
                       return std::max(0.0, 0.5 * (1.0 + std::cos(detail::schedule_pi *
                                                                  detail::python_float_mod(static_cast<double>(cycles) *
                                                                                         progress,
                                                                                     1.0))));
                     }) {}

}  // namespace acc::optim

namespace acc::detail {

// transformers raises ValueError for these: lr_end at or above the default lr, or a decay of no
// steps (a ZeroDivisionError there, at step total_steps).
ACC_DECL std::vector<optim::WarmupSchedule::Parameter> polynomial_parameters(const torch::optim::Optimizer& optimizer,
                                                                         const optim::PolynomialOptions& options) {
  const double lr_init = optimizer.defaults().get_lr();
  if (!(lr_init > options.lr_end()))
    throw Error("PolynomialSchedule: lr_end (" + schedule_number(options.lr_end()) +
                ") must be smaller than the optimizer's default lr (" + schedule_number(lr_init) + ")");
  if (options.total_steps() == options.warmup_steps())
    throw Error("PolynomialSchedule: total_steps equals warmup_steps (" + std::to_string(options.total_steps()) +
                "), which leaves no steps to decay over");
  return schedule_parameters("PolynomialSchedule", options.warmup_steps(), options.total_steps(),
                                     {{"lr_end", options.lr_end()}, {"power", options.power()}});
}

ACC_DECL int64_t resolved_timescale(const optim::InverseSqrtOptions& options) {
  const int64_t timescale =
      options.timescale() ? *options.timescale() : (options.warmup_steps() != 0 ? options.warmup_steps() : 10000);
  if (timescale <= 0)
    throw Error("InverseSqrtSchedule: timescale is " + std::to_string(timescale) + "; it must be 1 or more");
  return timescale;
}

}  // namespace acc::detail

namespace acc::optim {

ACC_DECL PolynomialSchedule::PolynomialSchedule(torch::optim::Optimizer& optimizer, const PolynomialOptions& options)
    : WarmupSchedule(optimizer, "polynomial", detail::polynomial_parameters(optimizer, options),
                     [warmup = options.warmup_steps(), total = options.total_steps(), lr_end = options.lr_end(),
                      power = options.power()](const WarmupSchedule& schedule, int64_t step) {
                       if (step < warmup) return detail::warmup_factor(step, warmup);
                       const double lr_init = schedule.default_lr();
                       if (step > total) return lr_end / lr_init;  // as LambdaLR multiplies by the base lr
                       const double lr_range = lr_init - lr_end;
                       const int64_t decay_steps = total - warmup;
                       const double pct_remaining =
                           1 - static_cast<double>(step - warmup) / static_cast<double>(decay_steps);
                       const double decay = lr_range * std::pow(pct_remaining, power) + lr_end;
                       return decay / lr_init;
                     }) {}

// The default timescale is that of current transformers (warmup_steps, or 10000 without warm-up);
// older versions took warmup_steps, which divided by zero without warm-up.
ACC_DECL InverseSqrtSchedule::InverseSqrtSchedule(torch::optim::Optimizer& optimizer,
                                                  const InverseSqrtOptions& options)
    : WarmupSchedule(optimizer, "inverse_sqrt",
                     detail::schedule_parameters("InverseSqrtSchedule", options.warmup_steps(), std::nullopt,
                                                 {{"timescale", static_cast<double>(detail::resolved_timescale(options))}}),
                     [warmup = options.warmup_steps(), timescale = detail::resolved_timescale(options)](
                         const WarmupSchedule&, int64_t step) {
                       if (step < warmup) return detail::warmup_factor(step, warmup);
                       const int64_t shift = timescale - warmup;
                       return 1.0 / std::sqrt(static_cast<double>(step + shift) / static_cast<double>(timescale));
                     }) {}

}  // namespace acc::optim
