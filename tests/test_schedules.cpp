#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/acc.hpp>
#include <acc/optim/schedules.hpp>

#include <torch/nn/modules/linear.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

using acc::optim::WarmupSchedule;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// An SGD of two parameter groups: the first at the default lr, the second at its own (so that a
// group's base lr and the optimizer's default lr differ, as the polynomial schedule cares).
struct TwoGroups {
  explicit TwoGroups(double default_lr = 0.1, double second_lr = 0.03)
      : optimizer({torch::optim::OptimizerParamGroup({net->weight}),
                   torch::optim::OptimizerParamGroup(
                       {net->bias}, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(second_lr)))},
                  torch::optim::SGDOptions(default_lr)) {}
  std::vector<double> lrs() const {
    std::vector<double> lrs;
    for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
    return lrs;
  }
  torch::nn::Linear net{4, 2};
  torch::optim::SGD optimizer;
};

// The schedules' formulas, written again from transformers' optimization.py, some in another but
// equal arithmetic form (so the results may differ in the last bits): the factor after `k` steps.
namespace reference {
constexpr double pi = 3.14159265358979323846;
double warmup(int64_t k, int64_t w) { return static_cast<double>(k) / std::max<double>(1.0, static_cast<double>(w)); }
double constant(int64_t k, int64_t w) { return k < w ? warmup(k, w) : 1.0; }
double linear(int64_t k, int64_t w, int64_t t) {
  if (k < w) return warmup(k, w);
  const double remaining = static_cast<double>(t - k) / static_cast<double>(std::max<int64_t>(1, t - w));
  return remaining > 0 ? remaining : 0.0;
}
double progress(int64_t k, int64_t w, int64_t t) {
  return static_cast<double>(k - w) / static_cast<double>(std::max<int64_t>(1, t - w));
}
double cosine(int64_t k, int64_t w, int64_t t, double cycles) {
  if (k < w) return warmup(k, w);
  return std::max(0.0, 0.5 + 0.5 * std::cos(2.0 * pi * cycles * progress(k, w, t)));
}
double restarts(int64_t k, int64_t w, int64_t t, int64_t cycles) {
  if (k < w) return warmup(k, w);
  const double p = progress(k, w, t);
  if (p >= 1.0) return 0.0;
  const double x = static_cast<double>(cycles) * p;
  return std::max(0.0, 0.5 + 0.5 * std::cos(pi * (x - std::floor(x))));
}
double polynomial(int64_t k, int64_t w, int64_t t, double lr_end, double power, double lr_init) {
  if (k < w) return warmup(k, w);
  if (k > t) return lr_end / lr_init;
  const double remaining = 1.0 - static_cast<double>(k - w) / static_cast<double>(t - w);
  return ((lr_init - lr_end) * std::pow(remaining, power) + lr_end) / lr_init;
}
double inverse_sqrt(int64_t k, int64_t w, int64_t timescale) {
  if (k < w) return warmup(k, w);
  return std::sqrt(static_cast<double>(timescale) / static_cast<double>(k + timescale - w));
}
}  // namespace reference

// The tolerance between a schedule's lr and the reference's. Both compute a factor of at most
// about 1 with a handful of double operations (each rounded to within eps/2 of a result below 2)
// and one libm call (cos, pow, sqrt: within an ulp); the forms differ by reassociation, and
// 1 + cos(x) near x = pi cancels, which turns the error into one relative to 1 rather than to the
// result, as does the error of cos's argument (at most a few ulps of a value below 2*pi*cycles,
// times |sin| <= 1). So: an absolute error of the factor of a few eps each; 16 eps, times the base
// lr, bounds it with room. A wrong formula is off by far more (a step's change is >= 1e-3 here).
double tolerance(double base_lr) { return 16 * DBL_EPSILON * base_lr; }

// The learning rates of both groups after construction and after each of `steps` steps.
std::vector<std::vector<double>> run(TwoGroups& problem, WarmupSchedule& schedule, int steps) {
  std::vector<std::vector<double>> lrs{problem.lrs()};
  for (int i = 0; i < steps; ++i) {
    schedule.step();
    lrs.push_back(problem.lrs());
  }
  return lrs;
}

// Checks that `schedule` (on a fresh TwoGroups) follows factor(k) for 0 <= k <= steps.
void check_sequence(const std::function<std::unique_ptr<WarmupSchedule>(torch::optim::Optimizer&)>& make,
                    const std::function<double(int64_t)>& factor, int steps) {
  TwoGroups problem;
  const auto schedule = make(problem.optimizer);
  const auto lrs = run(problem, *schedule, steps);
  const std::vector<double> base{0.1, 0.03};
  for (int k = 0; k <= steps; ++k)
    for (std::size_t g = 0; g < base.size(); ++g) {
      CAPTURE(k);
      CAPTURE(g);
      const double expected = base[g] * factor(k);
      CAPTURE(expected);
      CAPTURE(lrs[k][g]);
      CHECK(std::abs(lrs[k][g] - expected) <= tolerance(base[g]));
    }
  CHECK(schedule->step_count() == steps);
}

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

// One run of training with a schedule, as a resumed program runs it: a new Accelerator, net,
// optimizer and schedule; a checkpoint loaded first where `load` names one; then `steps` steps,
// and a checkpoint saved where `save` names one. Returns the lrs before the steps and after each.
template <class Schedule>
std::vector<std::vector<double>> train(const std::function<std::unique_ptr<Schedule>(torch::optim::Optimizer&)>& make,
                                       int steps, const std::filesystem::path& load = {},
                                       const std::filesystem::path& save = {}, double default_lr = 0.1) {
  acc::Accelerator<acc::Single> accelerator(cpu_options());
  TwoGroups problem(default_lr, default_lr / 4);
  auto schedule = make(problem.optimizer);
  auto [model, optimizer, scheduler] = accelerator.prepare(problem.net, problem.optimizer, *schedule);
  if (!load.empty()) accelerator.load_state(load);
  std::vector<std::vector<double>> lrs{problem.lrs()};
  for (int i = 0; i < steps; ++i) {
    scheduler.step();  // the prepared scheduler: steps once per process, as Accelerate's does
    lrs.push_back(problem.lrs());
  }
  if (!save.empty()) accelerator.save_state(save);
  return lrs;
}

}  // namespace

TEST_SUITE("schedules") {
  TEST_CASE("each schedule's learning rates are transformers' formula, group by group, step by step") {
    using namespace acc::optim;
    const int64_t w = 3, t = 17;
    const int steps = 24;  // past the end of the decay
    SUBCASE("constant with warm-up") {
      check_sequence([&](auto& o) { return std::make_unique<ConstantWithWarmupSchedule>(o, w); },
                     [&](int64_t k) { return reference::constant(k, w); }, steps);
    }
    SUBCASE("linear") {
      check_sequence(
          [&](auto& o) { return std::make_unique<LinearSchedule>(o, WarmupOptions().warmup_steps(w).total_steps(t)); },
          [&](int64_t k) { return reference::linear(k, w, t); }, steps);
    }
    SUBCASE("cosine, half a wave (default) and 1.5 waves") {
      check_sequence(
          [&](auto& o) { return std::make_unique<CosineSchedule>(o, CosineOptions().warmup_steps(w).total_steps(t)); },
          [&](int64_t k) { return reference::cosine(k, w, t, 0.5); }, steps);
      check_sequence(
          [&](auto& o) {
            return std::make_unique<CosineSchedule>(o, CosineOptions().warmup_steps(w).total_steps(t).num_cycles(1.5));
          },
          [&](int64_t k) { return reference::cosine(k, w, t, 1.5); }, steps);
    }
    SUBCASE("cosine with hard restarts, 1 cycle (default) and 3") {
      check_sequence(
          [&](auto& o) {
            return std::make_unique<CosineWithRestartsSchedule>(
                o, CosineWithRestartsOptions().warmup_steps(w).total_steps(t));
          },
          [&](int64_t k) { return reference::restarts(k, w, t, 1); }, steps);
      check_sequence(
          [&](auto& o) {
            return std::make_unique<CosineWithRestartsSchedule>(
                o, CosineWithRestartsOptions().warmup_steps(w).total_steps(t).num_cycles(3));
          },
          [&](int64_t k) { return reference::restarts(k, w, t, 3); }, steps);
    }
    SUBCASE("polynomial: defaults (linear to 1e-7), and power 2 to 0.01; on the default lr 0.1") {
      check_sequence(
          [&](auto& o) {
            return std::make_unique<PolynomialSchedule>(o, PolynomialOptions().warmup_steps(w).total_steps(t));
          },
          [&](int64_t k) { return reference::polynomial(k, w, t, 1e-7, 1.0, 0.1); }, steps);
      check_sequence(
          [&](auto& o) {
            return std::make_unique<PolynomialSchedule>(
                o, PolynomialOptions().warmup_steps(w).total_steps(t).lr_end(0.01).power(2.0));
          },
          [&](int64_t k) { return reference::polynomial(k, w, t, 0.01, 2.0, 0.1); }, steps);
    }
    SUBCASE("inverse square root: timescale warmup_steps (default), and 10") {
      check_sequence(
          [&](auto& o) { return std::make_unique<InverseSqrtSchedule>(o, InverseSqrtOptions().warmup_steps(w)); },
          [&](int64_t k) { return reference::inverse_sqrt(k, w, w); }, steps);
      check_sequence(
          [&](auto& o) {
            return std::make_unique<InverseSqrtSchedule>(o, InverseSqrtOptions().warmup_steps(w).timescale(10));
          },
          [&](int64_t k) { return reference::inverse_sqrt(k, w, 10); }, steps);
    }
  }

  TEST_CASE("values known exactly: building sets base_lr * factor(0), the k-th step base_lr * factor(k)") {
    using namespace acc::optim;
    TwoGroups problem(1.0, 0.5);
    SUBCASE("linear, warm-up 2, total 6") {
      LinearSchedule schedule(problem.optimizer, WarmupOptions().warmup_steps(2).total_steps(6));
      CHECK(schedule.base_lrs() == std::vector<double>{1.0, 0.5});
      const std::vector<double> expected{0, 0.5, 1, 0.75, 0.5, 0.25, 0, 0};
      const auto lrs = run(problem, schedule, 7);
      for (std::size_t k = 0; k < expected.size(); ++k) {
        CAPTURE(k);
        CHECK(lrs[k] == std::vector<double>{expected[k], expected[k] / 2});
      }
    }
    SUBCASE("linear without warm-up starts at the base lr") {
      LinearSchedule schedule(problem.optimizer, WarmupOptions().total_steps(4));
      CHECK(problem.lrs() == std::vector<double>{1.0, 0.5});
      schedule.step();
      CHECK(problem.lrs() == std::vector<double>{0.75, 0.375});
    }
    SUBCASE("constant with warm-up 4") {
      ConstantWithWarmupSchedule schedule(problem.optimizer, 4);
      CHECK(problem.lrs() == std::vector<double>{0, 0});
      const auto lrs = run(problem, schedule, 6);
      const std::vector<double> expected{0, 0.25, 0.5, 0.75, 1, 1, 1};
      for (std::size_t k = 0; k < expected.size(); ++k) CHECK(lrs[k][0] == expected[k]);
    }
    SUBCASE("cosine: the middle and the end") {
      CosineSchedule schedule(problem.optimizer, CosineOptions().total_steps(4));
      CHECK(schedule.factor(0) == 1.0);
      CHECK(schedule.factor(2) == doctest::Approx(0.5).epsilon(1e-15));
      CHECK(schedule.factor(4) == 0.0);
      CHECK(schedule.factor(8) == 1.0);  // past total_steps the cosine goes on: transformers does not clamp
    }
    SUBCASE("cosine with 2 hard restarts' cycles: back to the base lr half-way, 0 at the end and after") {
      CosineWithRestartsSchedule schedule(problem.optimizer, CosineWithRestartsOptions().total_steps(8).num_cycles(2));
      CHECK(schedule.factor(2) == doctest::Approx(0.5).epsilon(1e-15));
      CHECK(schedule.factor(4) == 1.0);
      CHECK(schedule.factor(8) == 0.0);
      CHECK(schedule.factor(9) == 0.0);
    }
    SUBCASE("polynomial scales the default lr's decay onto each group") {
      PolynomialSchedule schedule(problem.optimizer,
                                  PolynomialOptions().total_steps(10).lr_end(0.25).power(2.0));  // default lr 1
      CHECK(schedule.default_lr() == 1.0);
      CHECK(schedule.factor(5) == 0.25 + 0.75 * 0.25);
      CHECK(schedule.lrs(5) == std::vector<double>{0.4375, 0.21875});
      CHECK(schedule.factor(10) == 0.25);
      CHECK(schedule.factor(11) == 0.25);
    }
    SUBCASE("inverse square root: 1 at the end of the warm-up, 1/2 at 4 timescales; default timescale 10000") {
      InverseSqrtSchedule schedule(problem.optimizer, InverseSqrtOptions().warmup_steps(4));
      CHECK(schedule.parameters().back().name == "timescale");
      CHECK(schedule.parameters().back().value == 4);
      CHECK(schedule.factor(2) == 0.5);
      CHECK(schedule.factor(4) == 1.0);
      CHECK(schedule.factor(16) == 0.5);
      InverseSqrtSchedule without_warmup(problem.optimizer, InverseSqrtOptions());
      CHECK(without_warmup.factor(0) == 1.0);
      CHECK(without_warmup.factor(30000) == 0.5);
    }
  }

  TEST_CASE("options that cannot make a schedule are errors, and leave the optimizer as it was") {
    using namespace acc::optim;
    TwoGroups problem;
    CHECK(contains(error_of([&] { LinearSchedule(problem.optimizer, WarmupOptions().warmup_steps(10)); }),
                   "LinearSchedule needs total_steps"));
    CHECK(
        contains(error_of([&] { CosineSchedule(problem.optimizer, CosineOptions().warmup_steps(-1).total_steps(5)); }),
                 "warmup_steps is -1"));
    CHECK(contains(
        error_of([&] { PolynomialSchedule(problem.optimizer, PolynomialOptions().total_steps(5).lr_end(0.1)); }),
        "lr_end (0.1) must be smaller than the optimizer's default lr (0.1)"));
    CHECK(contains(
        error_of([&] { PolynomialSchedule(problem.optimizer, PolynomialOptions().warmup_steps(5).total_steps(5)); }),
        "no steps to decay over"));
    CHECK(contains(error_of([&] { InverseSqrtSchedule(problem.optimizer, InverseSqrtOptions().timescale(0)); }),
                   "timescale is 0"));
    CHECK(problem.lrs() == std::vector<double>{0.1, 0.03});
  }

  TEST_CASE("save and load without an Accelerator: the loaded schedule continues where the saved one was") {
    using namespace acc::optim;
    TwoGroups first;
    CosineSchedule saved(first.optimizer, CosineOptions().warmup_steps(2).total_steps(12));
    for (int i = 0; i < 5; ++i) saved.step();
    torch::serialize::OutputArchive out;
    saved.save(out);
    std::stringstream bytes;
    out.save_to(bytes);

    TwoGroups second(0.2, 0.2);  // other lrs: the saved base lrs come back
    CosineSchedule loaded(second.optimizer, CosineOptions().warmup_steps(2).total_steps(12));
    torch::serialize::InputArchive in;
    in.load_from(bytes);
    loaded.load(in);
    CHECK(loaded.step_count() == 5);
    CHECK(loaded.base_lrs() == saved.base_lrs());
    CHECK(second.lrs() == first.lrs());
    for (int i = 0; i < 8; ++i) {
      saved.step();
      loaded.step();
      CHECK(second.lrs() == first.lrs());
    }
  }

  TEST_CASE("save_state/load_state: a resumed schedule's learning rates equal the uninterrupted one's") {
    using namespace acc::optim;
    TempDir dir;
    const auto checkpoint = dir.path / "ckpt";
    const auto check_resume = [&](const auto& make) {
      // 6 steps, a checkpoint, 10 more; against a new run that loads it (its optimizer built with
      // other lrs, which the checkpoint's base lrs replace) and makes the 10 steps.
      const auto straight = train(make, 16);
      train(make, 6, {}, checkpoint);
      const auto resumed = train(make, 10, checkpoint, {}, 0.4);
      REQUIRE(resumed.size() == 11);
      for (std::size_t i = 0; i < resumed.size(); ++i) {
        CAPTURE(i);
        CHECK(resumed[i] == straight[6 + i]);
      }
      CHECK(straight[6] != straight[7]);  // the lr really changes across the resume
    };
    SUBCASE("linear") {
      check_resume(std::function<std::unique_ptr<LinearSchedule>(torch::optim::Optimizer&)>([](auto& o) {
        return std::make_unique<LinearSchedule>(o, WarmupOptions().warmup_steps(4).total_steps(14));
      }));
    }
    SUBCASE("cosine with restarts") {
      check_resume(std::function<std::unique_ptr<CosineWithRestartsSchedule>(torch::optim::Optimizer&)>([](auto& o) {
        return std::make_unique<CosineWithRestartsSchedule>(
            o, CosineWithRestartsOptions().warmup_steps(2).total_steps(14).num_cycles(2));
      }));
    }
    SUBCASE("polynomial (the default lr, which it divides by, comes back too)") {
      check_resume(std::function<std::unique_ptr<PolynomialSchedule>(torch::optim::Optimizer&)>([](auto& o) {
        return std::make_unique<PolynomialSchedule>(
            o, PolynomialOptions().warmup_steps(2).total_steps(14).lr_end(0.001).power(3.0));
      }));
    }
    SUBCASE("inverse square root") {
      check_resume(std::function<std::unique_ptr<InverseSqrtSchedule>(torch::optim::Optimizer&)>(
          [](auto& o) { return std::make_unique<InverseSqrtSchedule>(o, InverseSqrtOptions().warmup_steps(3)); }));
    }
  }

  TEST_CASE(
      "load_state: a schedule reads a step count alone (libtorch's schedulers, older checkpoints), and they its") {
    using namespace acc::optim;
    TempDir dir;
    const std::function<std::unique_ptr<torch::optim::StepLR>(torch::optim::Optimizer&)> step_lr = [](auto& o) {
      return std::make_unique<torch::optim::StepLR>(o, 3, 0.5);
    };
    const std::function<std::unique_ptr<LinearSchedule>(torch::optim::Optimizer&)> linear = [](auto& o) {
      return std::make_unique<LinearSchedule>(o, WarmupOptions().warmup_steps(2).total_steps(10));
    };
    train(step_lr, 5, {}, dir.path / "plain");
    const auto resumed = train(linear, 1, dir.path / "plain", {}, 0.4);
    CHECK(resumed[0][0] == doctest::Approx(0.4 * 5 / 8.0));  // its own base lrs, the saved step count
    CHECK(resumed[1][0] == doctest::Approx(0.4 * 4 / 8.0));

    train(linear, 4, {}, dir.path / "full");
    acc::Accelerator<acc::Single> accelerator(cpu_options());
    TwoGroups problem;
    torch::optim::StepLR plain(problem.optimizer, 3, 0.5);
    auto prepared = accelerator.prepare(problem.net, problem.optimizer, plain);
    accelerator.load_state(dir.path / "full");
    CHECK(acc::detail::SchedulerStepCount::of(plain) == 4);
  }

  TEST_CASE(
      "load_state into a schedule of other parameters or another kind: an acc::Error naming the file and the "
      "parameter, and nothing changed") {
    using namespace acc::optim;
    TempDir dir;
    const auto checkpoint = dir.path / "ckpt";
    train(std::function<std::unique_ptr<LinearSchedule>(torch::optim::Optimizer&)>([](auto& o) {
            return std::make_unique<LinearSchedule>(o, WarmupOptions().warmup_steps(2).total_steps(100));
          }),
          3, {}, checkpoint);
    const auto file = (checkpoint / "scheduler.bin").string();

    acc::Accelerator<acc::Single> accelerator(cpu_options());
    TwoGroups problem;
    SUBCASE("total_steps") {
      LinearSchedule other(problem.optimizer, WarmupOptions().warmup_steps(2).total_steps(200));
      auto prepared = accelerator.prepare(problem.net, problem.optimizer, other);
      const auto message = error_of([&] { accelerator.load_state(checkpoint); });
      CAPTURE(message);
      CHECK(contains(message, "'" + file + "'"));
      CHECK(contains(message, "it was saved with total_steps 100, and this linear schedule has total_steps 200"));
      CHECK(other.step_count() == 0);
      CHECK(problem.lrs() == std::vector<double>{0, 0});
    }
    SUBCASE("kind") {
      CosineSchedule other(problem.optimizer, CosineOptions().warmup_steps(2).total_steps(100));
      auto prepared = accelerator.prepare(problem.net, problem.optimizer, other);
      const auto message = error_of([&] { accelerator.load_state(checkpoint); });
      CAPTURE(message);
      CHECK(contains(message, "'" + file + "'"));
      CHECK(contains(message, "the state of a linear schedule, and this cosine schedule"));
      CHECK(other.step_count() == 0);
    }
    SUBCASE("the same parameters load") {
      LinearSchedule same(problem.optimizer, WarmupOptions().warmup_steps(2).total_steps(100));
      auto prepared = accelerator.prepare(problem.net, problem.optimizer, same);
      CHECK(error_of([&] { accelerator.load_state(checkpoint); }) == "");
      CHECK(same.step_count() == 3);
    }
  }
}
