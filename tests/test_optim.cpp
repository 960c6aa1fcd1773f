#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/optim/adamw.hpp>

#include <torch/cuda.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/output-archive.h>

#if ACC_HAS_CUDA
#include "no_host_sync.hpp"
#endif

#include <vector>

namespace {

// Two groups (the second with its own learning rate, no weight decay) and one parameter that has
// no gradient on every third step, so that step counts differ within a group.
struct Problem {
  explicit Problem(c10::Device device) {
    at::manual_seed(7);
    for (const auto& shape : std::vector<std::vector<int64_t>>{{8, 5}, {5}, {3, 4}, {2}})
      params.push_back(at::randn(shape, at::TensorOptions(device)).requires_grad_(true));
  }
  std::vector<torch::optim::OptimizerParamGroup> groups() const {
    return {torch::optim::OptimizerParamGroup({params[0], params[1]}),
            torch::optim::OptimizerParamGroup(
                {params[2], params[3]},
                std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(0.02).weight_decay(0)))};
  }
  // Gradients of step `step`: a fixed function of the parameters, none for params[3] every third step.
  void set_gradients(int step) const {
    for (std::size_t i = 0; i < params.size(); ++i) {
      params[i].mutable_grad() =
          (i == 3 && step % 3 == 0) ? at::Tensor() : (params[i].detach() * 0.5 + 0.1 * (step + 1)).sin();
    }
  }
  std::vector<at::Tensor> params;
};

const auto options = torch::optim::AdamWOptions(0.05).weight_decay(0.1);

// Steps from .. to - 1: the same gradients in both problems, then a step of each optimizer.
template <class FastStep>
void train_both(Problem& ours, Problem& theirs, int from, int to, FastStep&& fast_step,
                torch::optim::Optimizer& reference) {
  for (int step = from; step < to; ++step) {
    ours.set_gradients(step);
    theirs.set_gradients(step);
    fast_step();
    reference.step();
  }
}

}  // namespace

TEST_CASE("acc::optim::AdamW computes exactly what torch::optim::AdamW computes, and shares its state") {
  const c10::Device cpu(c10::kCPU);
  Problem ours(cpu), theirs(cpu);
  acc::optim::AdamW fast(ours.groups(), options);
  torch::optim::AdamW reference(theirs.groups(), options);
  train_both(
      ours, theirs, 0, 20, [&] { fast.step(); }, reference);
  for (std::size_t i = 0; i < ours.params.size(); ++i) {
    CAPTURE(i);
    CHECK(at::equal(ours.params[i], theirs.params[i]));
  }
  // torch's own step finds the state this one kept (same keys, same layout): it continues exactly.
  train_both(
      ours, theirs, 20, 25, [&] { fast.torch::optim::AdamW::step(); }, reference);
  for (std::size_t i = 0; i < ours.params.size(); ++i) CHECK(at::equal(ours.params[i], theirs.params[i]));
  // Parameters moved: the check above compares trained values, not two copies of the start.
  CHECK(!at::allclose(ours.params[0], Problem(cpu).params[0]));
}

TEST_CASE("acc::optim::AdamW: amsgrad falls back to torch's loop with the same result") {
  const c10::Device cpu(c10::kCPU);
  Problem ours(cpu), theirs(cpu);
  acc::optim::AdamW fast(ours.params, torch::optim::AdamWOptions(0.05).amsgrad(true));
  torch::optim::AdamW reference(theirs.params, torch::optim::AdamWOptions(0.05).amsgrad(true));
  train_both(
      ours, theirs, 0, 5, [&] { fast.step(); }, reference);
  for (std::size_t i = 0; i < ours.params.size(); ++i) CHECK(at::equal(ours.params[i], theirs.params[i]));
}

TEST_CASE("CUDA: acc::optim::AdamW's fused kernel stays within rounding of torch::optim::AdamW" *
          doctest::skip(!torch::cuda::is_available())) {
  const c10::Device cuda(c10::kCUDA, 0);
  Problem ours(cuda), theirs(cuda);
  acc::optim::AdamW fast(ours.groups(), options);
  torch::optim::AdamW reference(theirs.groups(), options);
  train_both(
      ours, theirs, 0, 20, [&] { fast.step(); }, reference);
  for (std::size_t i = 0; i < ours.params.size(); ++i) {
    CAPTURE(i);
    CHECK(at::allclose(ours.params[i], theirs.params[i], /*rtol=*/1e-5, /*atol=*/1e-6));
  }
}

#if ACC_HAS_CUDA
TEST_CASE(
    "CUDA: step_unless takes the fused step where found_inf is 0, changes nothing where it is 1, and never "
    "waits for the GPU" *
    doctest::skip(!torch::cuda::is_available())) {
  const c10::Device cuda(c10::kCUDA, 0);
  Problem masked(cuda), plain(cuda);
  acc::optim::AdamW ours(masked.groups(), options), reference(plain.groups(), options);
  const auto flag = [&](float value) { return at::full({1}, value, at::TensorOptions(cuda).dtype(at::kFloat)); };
  const auto no_overflow = flag(0), overflow = flag(1);
  for (int step = 0; step < 12; ++step) {
    CAPTURE(step);
    masked.set_gradients(step);
    plain.set_gradients(step);
    if (step % 4 == 2) {  // an overflow: nothing moves, the step does not count
      std::vector<at::Tensor> before;
      for (const auto& p : masked.params) before.push_back(p.detach().clone());
      {
        NoHostSync no_sync;
        ours.step_unless(overflow);
      }
      for (std::size_t i = 0; i < before.size(); ++i) CHECK(at::equal(before[i], masked.params[i]));
      continue;
    }
    {
      NoHostSync no_sync;
      ours.step_unless(no_overflow);
    }
    reference.step();
  }
  // The same fused kernel with the same step counts: the same bits.
  for (std::size_t i = 0; i < masked.params.size(); ++i) CHECK(at::equal(masked.params[i], plain.params[i]));
  // Saving copies the device's counts to the host; a plain step then goes on from them exactly.
  torch::serialize::OutputArchive archive;
  ours.save(archive);
  train_both(
      masked, plain, 12, 14, [&] { ours.step(); }, reference);
  for (std::size_t i = 0; i < masked.params.size(); ++i) CHECK(at::equal(masked.params[i], plain.params[i]));
}
#endif
