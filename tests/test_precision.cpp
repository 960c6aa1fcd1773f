#include "pch.hpp"  // first: libtorch, then doctest
#include "scaled_fp32.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/optim/sgd.h>

#if ACC_HAS_CUDA
#include "no_host_sync.hpp"
#endif

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>

namespace {

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

// Policies are types that bring their pieces: the library's, FP32 with FP16's scaler put in
// (ScaledFP32), and not a type that lacks a piece.
struct NoForwardScope : acc::FP32 {
  using forward_scope = void;
};
static_assert(acc::is_precision_policy_v<acc::FP32> && acc::is_precision_policy_v<acc::BF16> &&
              acc::is_precision_policy_v<acc::FP16> && acc::is_precision_policy_v<acc::BF16True> &&
              acc::is_precision_policy_v<acc::FP16True> && acc::is_precision_policy_v<ScaledFP32>);
static_assert(!acc::is_precision_policy_v<NoForwardScope> && !acc::is_precision_policy_v<int>);
static_assert(acc::uses_grad_scaler_v<acc::FP16> && acc::uses_grad_scaler_v<ScaledFP32> &&
              !acc::uses_grad_scaler_v<acc::BF16>);

std::vector<at::Tensor> copies(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

}  // namespace

TEST_CASE("GradScaler: overflow backs off, growth after the interval, state round-trip") {
  acc::GradScaler scaler(acc::GradScalerOptions().growth_interval(3), c10::Device(c10::kCPU));
  CHECK(scaler.scale_value() == 65536.0);
  CHECK(scaler.scale(at::ones({1})).item<float>() == 65536.0f);

  std::vector<at::Tensor> grads{at::full({2}, 65536.0), at::full({1}, std::numeric_limits<float>::infinity())};
  scaler.unscale(grads);
  CHECK(scaler.found_inf().item<float>() == 1.0f);
  CHECK(grads[0][0].item<float>() == 1.0f);
  scaler.update();
  CHECK(scaler.scale_value() == 32768.0);

  for (int step = 0; step < 3; ++step) {
    std::vector<at::Tensor> clean{at::ones({2})};
    scaler.unscale(clean);
    CHECK(scaler.found_inf().item<float>() == 0.0f);
    scaler.update();
    CHECK(scaler.scale_value() == (step < 2 ? 32768.0 : 65536.0));
  }
  const auto saved = scaler.state();
  acc::GradScaler restored(acc::GradScalerOptions(), c10::Device(c10::kCPU));
  restored.load({saved.scale, saved.growth_tracker});
  CHECK(restored.scale_value() == scaler.scale_value());
  CHECK(restored.state().growth_tracker == saved.growth_tracker);
  const auto nan = std::vector<at::Tensor>{at::full({1}, std::numeric_limits<float>::quiet_NaN())};
  restored.unscale(nan);
  CHECK(restored.found_inf().item<float>() == 1.0f);
}

TEST_CASE("loss scaling: an overflowing step is skipped, the scheduler waits, clean steps train as fp32 does") {
  acc::Accelerator<acc::Single, ScaledFP32> accelerator(cpu_options());
  accelerator.set_seed(3);
  torch::nn::Linear net(4, 2);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.1));
  torch::optim::StepLR sched(opt, 1, 0.5);
  auto [model, optimizer, scheduler] = accelerator.prepare(net, opt, sched);
  REQUIRE(accelerator.scaler() != nullptr);

  // an inf in the loss makes inf gradients: the step is skipped and the scale halves
  const auto before = copies(net->parameters());
  optimizer.zero_grad();
  accelerator.backward(model(at::ones({3, 4})).sum() * std::numeric_limits<float>::infinity());
  optimizer.step();
  scheduler.step();
  CHECK(optimizer.step_was_skipped());
  CHECK(accelerator.scaler()->scale_value() == 32768.0);
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(at::equal(before[i], net->parameters()[i]));

  // a clean step: gradients unscaled exactly (powers of two), the same update as without scaling
  torch::nn::Linear reference(4, 2);
  {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < before.size(); ++i) reference->parameters()[i].copy_(before[i]);
  }
  torch::optim::AdamW reference_opt(reference->parameters(), torch::optim::AdamWOptions(0.1));
  const auto x = at::randn({3, 4});
  optimizer.zero_grad();
  accelerator.backward(model(x).pow(2).sum());
  // clipping unscales once, however often it is called
  const double norm = accelerator.clip_grad_norm_(net->parameters(), 1e9);
  CHECK(accelerator.clip_grad_norm_(net->parameters(), 1e9) == doctest::Approx(norm));
  optimizer.step();
  scheduler.step();
  CHECK_FALSE(optimizer.step_was_skipped());
  // the skipped step did not count for the scheduler: this is its first step, which StepLR keeps
  CHECK(opt.param_groups()[0].options().get_lr() == doctest::Approx(0.1));
  reference_opt.zero_grad();
  reference(x).pow(2).sum().backward();
  double reference_norm = 0;
  for (const auto& p : reference->parameters()) reference_norm += p.grad().pow(2).sum().item<double>();
  CHECK(norm == doctest::Approx(std::sqrt(reference_norm)));
  reference_opt.step();
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(at::allclose(net->parameters()[i], reference->parameters()[i]));
}

TEST_CASE("FP16 autocast: where this libtorch has it, training runs; where not, a clear error") {
  using Fp16Accelerator = acc::Accelerator<acc::Single, acc::FP16>;
  if (acc::compat::autocast_supported(c10::kCPU, at::kHalf)) {
    // A scale this model's fp16 gradients fit under: with the default 65536 the weight's gradient
    // (3 rows of ones) is 3 * 65536, past fp16's largest 65504, and the first step is skipped.
    Fp16Accelerator accelerator(cpu_options().grad_scaler(acc::GradScalerOptions().init_scale(1024)));
    torch::nn::Linear net(4, 2);
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.1));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    optimizer.zero_grad();
    accelerator.backward(model(at::ones({3, 4})).sum());
    optimizer.step();
    CHECK_FALSE(optimizer.step_was_skipped());
  } else {
    CHECK_THROWS_WITH_AS(Fp16Accelerator{cpu_options()},
                         "--mixed_precision fp16 (mixed_precision: fp16) has no autocast on cpu in this libtorch; on "
                         "cpu use --mixed_precision no or bf16 (a program that names its policies: acc::FP32 or "
                         "acc::BF16)",
                         acc::Error);
  }
}

TEST_CASE("mixed precision refuses half parameters and names the fix") {
  acc::Accelerator<acc::Single, acc::BF16> accelerator(cpu_options());
  torch::nn::Linear net(4, 2);
  net->to(at::kBFloat16);
  CHECK_THROWS_WITH_AS(accelerator.prepare(net),
                       "parameter 'weight' is BFloat16 but mixed precision 'bf16' expects fp32 parameters (it keeps "
                       "fp32 master weights and computes in half under autocast); keep the model in fp32, or use "
                       "acc::FP16True / acc::BF16True for half parameters",
                       acc::Error);
}

TEST_CASE("BF16True: parameters, gradients and compute in bf16; fp32 inputs and outputs") {
  acc::Accelerator<acc::Single, acc::BF16True> accelerator(cpu_options());
  torch::nn::Linear net(4, 2);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.1));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  CHECK((net->weight.scalar_type() == at::kBFloat16));
  const auto out = model(at::ones({3, 4}));
  CHECK((out.scalar_type() == at::kFloat));
  const auto before = net->weight.detach().clone();
  optimizer.zero_grad();
  accelerator.backward(out.sum());
  CHECK((net->weight.grad().scalar_type() == at::kBFloat16));
  optimizer.step();
  CHECK_FALSE(at::equal(before, net->weight));
}

namespace {

// A few steps of a small regression on cuda:0 under one precision; returns the first and last
// loss. fp16 may skip its first steps, while the scale comes down from 65536 to what the
// gradients fit in (as PyTorch's GradScaler does); the others never skip.
template <class Precision>
std::pair<double, double> cuda_training() {
  int skipped = 0;
  acc::Accelerator<acc::Single, Precision> accelerator(
      acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}));
  accelerator.set_seed(0);
  torch::nn::Linear net(16, 1);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.05));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  const auto x = at::randn({64, 16}, at::TensorOptions(accelerator.device()));
  const auto y = x.sum(1, true);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    optimizer.zero_grad();
    auto loss = (model(x) - y).pow(2).mean();
    accelerator.backward(loss);
    optimizer.step();
    skipped += optimizer.step_was_skipped() ? 1 : 0;
    (step == 0 ? first : last) = loss.item().toDouble();
  }
  CHECK(skipped <= (acc::uses_grad_scaler_v<Precision> ? 8 : 0));
  return {first, last};
}

}  // namespace

TEST_CASE("CUDA: fp32, fp16 (with loss scaling) and bf16 train; an fp16 overflow is skipped" *
          doctest::skip(!torch::cuda::is_available())) {
  for (const auto& [first, last] :
       {cuda_training<acc::FP32>(), cuda_training<acc::FP16>(), cuda_training<acc::BF16>()}) {
    CHECK(last < 0.5 * first);
  }
  acc::Accelerator<acc::Single, acc::FP16> accelerator(
      acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}));
  torch::nn::Linear net(16, 1);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.05));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  const auto before = net->weight.detach().clone();
  optimizer.zero_grad();
  accelerator.backward(model(at::full({4, 16}, 60000.0, at::TensorOptions(accelerator.device()))).sum() * 1e6);
  optimizer.step();
  CHECK(optimizer.step_was_skipped());
  CHECK(at::equal(before, net->weight));
  CHECK(accelerator.scaler()->scale_value() == 32768.0);
}

#if ACC_HAS_CUDA
TEST_CASE("CUDA: FP16 with acc::optim::AdamW checks for overflow and skips on the GPU: a step never waits for it" *
          doctest::skip(!torch::cuda::is_available())) {
  acc::Accelerator<acc::Single, acc::FP16> accelerator(
      acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}));
  torch::nn::Linear net(16, 4);
  acc::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-3));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  const auto x = at::randn({8, 16}, at::TensorOptions(accelerator.device()));
  for (int step = 0; step < 4; ++step) {
    CAPTURE(step);
    const bool overflows = step == 1;  // an inf input makes every gradient inf or NaN
    const auto before = net->weight.detach().clone();
    const double scale = accelerator.scaler()->scale_value();
    {
      NoHostSync no_sync;
      optimizer.zero_grad();
      accelerator.backward(model(overflows ? x * std::numeric_limits<double>::infinity() : x).pow(2).mean());
      optimizer.step();
    }
    CHECK(optimizer.step_was_skipped() == overflows);
    CHECK(at::equal(before, net->weight) == overflows);
    CHECK(accelerator.scaler()->scale_value() == (overflows ? scale / 2 : scale));
  }
}
#endif

namespace {

// One line of tests/golden/grad_scaler_sgd.txt, written by tests/golden/grad_scaler.py.
struct GoldenStep {
  double scale;
  bool skipped;
};

}  // namespace

TEST_CASE("GradScaler matches torch.amp.GradScaler's golden values (scale trajectory, skips, parameters)") {
  const auto golden_file = std::filesystem::path(ACC_TESTS_DIR) / "golden" / "grad_scaler_sgd.txt";
  std::ifstream in(golden_file);
  REQUIRE_MESSAGE(in, "missing " << golden_file << " (written by tests/golden/grad_scaler.py)");
  std::vector<GoldenStep> steps;
  std::map<std::string, std::vector<float>> params;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string kind;
    fields >> kind;
    if (kind == "scale") {
      int step = 0, skipped = 0;
      std::string scale;
      fields >> step >> scale >> skipped;
      REQUIRE(step == static_cast<int>(steps.size()));
      steps.push_back({std::strtod(scale.c_str(), nullptr), skipped != 0});
    } else if (kind == "param") {
      std::string name, value;
      fields >> name;
      while (fields >> value) params[name].push_back(static_cast<float>(std::strtod(value.c_str(), nullptr)));
    }
  }
  REQUIRE(steps.size() == 16);
  REQUIRE(params.size() == 2);

  // The problem of grad_scaler.py, through the Accelerator with loss scaling on the CPU.
  acc::Accelerator<acc::Single, ScaledFP32> accelerator(
      cpu_options().grad_scaler(acc::GradScalerOptions().init_scale(65536.0).growth_interval(3)));
  torch::nn::Linear net(4, 1);
  {
    at::NoGradGuard no_grad;
    net->weight.copy_(at::tensor({0.125f, -0.25f, 0.375f, -0.5f}).view({1, 4}));
    net->bias.fill_(0.0625);
  }
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.0625).momentum(0.875));
  auto [model, optimizer] = accelerator.prepare(net, sgd);
  for (int step = 0; step < 16; ++step) {
    auto x = at::empty({8, 4}), y = at::empty({8, 1});
    for (int i = 0; i < 8; ++i) {
      for (int j = 0; j < 4; ++j) x[i][j] = ((i * 7 + j * 3 + step * 5) % 11 - 5) / 8.0;
      y[i][0] = ((i + step) % 5 - 2) / 4.0;
    }
    if (step == 3 || step == 4 || step == 10) x[0][0] = 1e30;
    optimizer.zero_grad();
    accelerator.backward((model(x) - y).pow(2).mean());
    optimizer.step();
    CAPTURE(step);
    CHECK(accelerator.scaler()->scale_value() == steps[static_cast<std::size_t>(step)].scale);
    CHECK(optimizer.step_was_skipped() == steps[static_cast<std::size_t>(step)].skipped);
  }
  const auto expected_weight = at::tensor(params.at("weight")).view({1, 4});
  const auto expected_bias = at::tensor(params.at("bias"));
  // SGD does not normalise its update, so a rounding difference stays one: torch and this differ only
  // in float32's summation order within a step (seen: 1 ulp, 7.5e-9); the tolerance is about 10 ulps.
  CHECK(at::allclose(net->weight, expected_weight, /*rtol=*/1e-6, /*atol=*/1e-7));
  CHECK(at::allclose(net->bias, expected_bias, /*rtol=*/1e-6, /*atol=*/1e-7));
  MESSAGE("largest parameter difference from torch: ", (net->weight - expected_weight).abs().max().item<float>());
}
