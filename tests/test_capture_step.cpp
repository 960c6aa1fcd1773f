#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#if ACC_HAS_CUDA
#include "no_host_sync.hpp"

#include <ATen/cuda/Sleep.h>
#endif

#include <chrono>
#include <limits>
#include <string>
#include <vector>

namespace {

torch::nn::Sequential make_net() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 10));
}

std::vector<torch::data::Example<>> make_batches(const c10::Device& device, int count) {
  torch::manual_seed(1);
  std::vector<torch::data::Example<>> batches;
  for (int i = 0; i < count; ++i)
    batches.emplace_back(torch::randn({16, 32}).to(device), torch::randint(0, 10, {16}).to(device));
  return batches;
}

// A model, its optimizer and the training step a loop runs, for one Accelerator.
template <class Strategy, class Precision>
struct Trainer {
  explicit Trainer(acc::AcceleratorOptions options)
      : accelerator(options.environment(acc::ProcessEnvironment{})),
        net(make_net()),
        opt(net->parameters(), torch::optim::AdamWOptions(1e-2)),
        prepared(accelerator.prepare(net, opt)) {}

  // The loop's body, as a user writes it.
  at::Tensor step(const torch::data::Example<>& batch) {
    auto& [model, optimizer] = prepared;
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
    accelerator.backward(loss);
    optimizer.step();
    return loss;
  }
  auto captured(acc::CaptureOptions options = {}) {
    return acc::capture_step(
        accelerator, std::get<1>(prepared), [this](const torch::data::Example<>& batch) { return step(batch); },
        options);
  }

  acc::Accelerator<Strategy, Precision> accelerator;
  torch::nn::Sequential net;
  acc::optim::AdamW opt;
  decltype(accelerator.prepare(net, opt)) prepared;
};

}  // namespace

TEST_CASE("capture_step on a CPU device runs each call as one eager step on its batch, as the loop does") {
  const c10::Device cpu(c10::kCPU);
  const auto batches = make_batches(cpu, 6);
  const auto options = acc::AcceleratorOptions().cpu(true);
  Trainer<acc::Single, acc::FP32> loop(options), stepped(options);
  auto step = stepped.captured(acc::CaptureOptions().warmup_steps(2));
  for (const auto& batch : batches) {
    const auto expected = loop.step(batch);
    CHECK(at::equal(step(batch), expected));
  }
  CHECK_FALSE(step.captured());
  CHECK(step.steps() == 6);
  const auto ours = stepped.net->parameters(), theirs = loop.net->parameters();
  for (std::size_t i = 0; i < ours.size(); ++i) CHECK(at::equal(ours[i], theirs[i]));
  CHECK_FALSE(at::equal(ours[0], make_net()->parameters()[0]));  // trained: not the start compared with itself
}

TEST_CASE("capture_step refuses what a CUDA graph cannot replay, on the CPU too, naming the fix") {
  const c10::Device cpu(c10::kCPU);
  const auto batches = make_batches(cpu, 1);
  SUBCASE("a batch of another shape") {
    Trainer<acc::Single, acc::FP32> trainer(acc::AcceleratorOptions().cpu(true));
    auto step = trainer.captured();
    step(batches[0]);
    const torch::data::Example<> shorter(batches[0].data.narrow(0, 0, 9), batches[0].target.narrow(0, 0, 9));
    const auto message = error_of([&] { step(shorter); });
    INFO(message);
    CHECK(message.find("tensor 0 of the batch is [9, 32] (Float, cpu)") != std::string::npos);
    CHECK(message.find("[16, 32]") != std::string::npos);
    CHECK(message.find("drop_last(true)") != std::string::npos);
    CHECK(step.steps() == 1);  // the refused batch took no step
  }
  SUBCASE("gradient accumulation") {
    Trainer<acc::Single, acc::FP32> trainer(acc::AcceleratorOptions().cpu(true).gradient_accumulation_steps(2));
    auto step = trainer.captured();
    const auto message = error_of([&] { step(batches[0]); });
    CHECK(message.find("gradient_accumulation_steps is 2") != std::string::npos);
    CHECK(message.find("gradient_accumulation_steps(1)") != std::string::npos);
  }
  SUBCASE("no warm-up step") {
    Trainer<acc::Single, acc::FP32> trainer(acc::AcceleratorOptions().cpu(true));
    const auto message = error_of([&] { trainer.captured(acc::CaptureOptions().warmup_steps(0)); });
    CHECK(message.find("warmup_steps is 0; it must be at least 1") != std::string::npos);
  }
}

#if ACC_HAS_CUDA
namespace {

// Trains one model with the loop and another with capture_step on the same batches, changing the
// learning rate before every step as a scheduler would; every loss and, at the end, every
// parameter must be the same bits: the graph replays the very kernels the loop launches, with the
// step counts, learning rate and loss scale read from the device. Step `overflow` (fp16) gets an
// input of inf, whose step both must skip.
template <class Strategy, class Precision>
void check_captured_equals_loop(int overflow = -1) {
  const c10::Device cuda(c10::kCUDA, 0);
  const auto batches = make_batches(cuda, 4);
  Trainer<Strategy, Precision> loop({}), stepped({});
  auto step = stepped.captured();
  constexpr int kSteps = 10;  // 3 warm-up, the capture, 6 replays
  for (int i = 0; i < kSteps; ++i) {
    CAPTURE(i);
    auto batch = batches[static_cast<std::size_t>(i) % batches.size()];
    if (i == overflow) batch.data = batch.data * std::numeric_limits<float>::infinity();
    for (auto* optimizer : {&loop.opt, &stepped.opt})
      static_cast<torch::optim::AdamWOptions&>(optimizer->param_groups()[0].options()).lr(1e-2 / (1 + i));
    const auto expected = loop.step(batch);
    const auto loss = step(batch);
    CHECK(step.captured() == (i >= 3));
    // The same bits, NaN included (the overflowing step's loss).
    CHECK(at::allclose(loss, expected, /*rtol=*/0, /*atol=*/0, /*equal_nan=*/true));
    CHECK(std::get<1>(stepped.prepared).step_was_skipped() == (i == overflow));
    CHECK(std::get<1>(loop.prepared).step_was_skipped() == (i == overflow));
  }
  const auto ours = stepped.net->parameters(), theirs = loop.net->parameters();
  for (std::size_t i = 0; i < ours.size(); ++i) {
    CAPTURE(i);
    CHECK(at::equal(ours[i], theirs[i]));
  }
  if constexpr (acc::uses_grad_scaler_v<Precision>)
    CHECK(stepped.accelerator.scaler()->scale_value() == loop.accelerator.scaler()->scale_value());
  CHECK_FALSE(at::equal(ours[0], make_net()->parameters()[0].to(cuda)));
}

}  // namespace

TEST_CASE("CUDA: a captured step trains bit for bit as the loop, in fp32, bf16 and fp16, as the learning rate changes" *
          doctest::skip(!torch::cuda::is_available())) {
  SUBCASE("fp32") { check_captured_equals_loop<acc::Single, acc::FP32>(); }
  SUBCASE("bf16") { check_captured_equals_loop<acc::Single, acc::BF16>(); }
  SUBCASE("fp16, an overflow skipped in a replay") { check_captured_equals_loop<acc::Single, acc::FP16>(6); }
#if ACC_HAS_NCCL
  SUBCASE("DDP over NCCL, one process: the buckets and their hooks in the graph") {
    check_captured_equals_loop<acc::DDP<acc::Nccl>, acc::BF16>();
  }
#endif
}

TEST_CASE("CUDA: a replayed step never waits for the GPU" * doctest::skip(!torch::cuda::is_available())) {
  const c10::Device cuda(c10::kCUDA, 0);
  const auto batches = make_batches(cuda, 4);
  Trainer<acc::Single, acc::FP16> trainer({});
  auto step = trainer.captured(acc::CaptureOptions().warmup_steps(1));
  step(batches[0]);
  step(batches[1]);  // the capture
  REQUIRE(step.captured());
  NoHostSync no_sync;
  for (int i = 2; i < 8; ++i) step(batches[static_cast<std::size_t>(i) % batches.size()]);
}

TEST_CASE("CUDA: a step that waits for the GPU cannot be captured: an error that says why, no step taken" *
          doctest::skip(!torch::cuda::is_available())) {
  const c10::Device cuda(c10::kCUDA, 0);
  const auto batches = make_batches(cuda, 1);
  Trainer<acc::Single, acc::FP32> trainer({});
  auto step = acc::capture_step(
      trainer.accelerator, trainer.opt,
      [&](const torch::data::Example<>& batch) {
        auto loss = trainer.step(batch);
        if (loss.item<float>() < 0) throw std::logic_error("a cross entropy below zero");  // a host read
        return loss;
      },
      acc::CaptureOptions().warmup_steps(1));
  step(batches[0]);
  const auto before = trainer.net->parameters()[0].detach().clone();
  const auto message = error_of([&] { step(batches[0]); });
  INFO(message);
  CHECK(step.steps() == 1);
  CHECK_FALSE(step.captured());
  CHECK(message.find("could not be captured as a CUDA graph, and was not taken") != std::string::npos);
  CHECK(message.find("no .item()") != std::string::npos);
  CHECK(at::equal(before, trainer.net->parameters()[0]));
  // The device is usable after the failed capture: an eager step runs.
  trainer.step(batches[0]);
  CHECK_FALSE(at::equal(before, trainer.net->parameters()[0]));
}

#if ACC_HAS_NCCL
TEST_CASE("CUDA: work handed to the NCCL watchdog that outlasts the timeout aborts the communicator, naming it" *
          doctest::skip(!torch::cuda::is_available())) {
  acc::Accelerator<acc::DDP<acc::Nccl>, acc::FP32> accelerator(
      acc::AcceleratorOptions()
          .environment(acc::ProcessEnvironment{})
          .process_group(acc::ProcessGroupOptions().timeout(std::chrono::seconds(1))));
  auto& comm = accelerator.strategy().comm();
  // A kernel that spins for about 3 s at the H200's 1.98 GHz (longer on a slower clock): work a
  // replay queued that does not end within the 1 s timeout, as a collective whose peer never comes.
  at::cuda::sleep(static_cast<int64_t>(6e9));
  comm.watch_queued_work("a captured step's collectives");
  torch::cuda::synchronize();
  const auto message = error_of([&] { comm.throw_if_failed(); });
  INFO(message);
  CHECK(message.find("a captured step's collectives") != std::string::npos);
  CHECK(message.find("did not complete within 1 s") != std::string::npos);
  CHECK(message.find("aborted") != std::string::npos);
}
#endif
#endif
