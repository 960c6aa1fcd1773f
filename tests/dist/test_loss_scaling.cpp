#include "../pch.hpp"  // first: libtorch, then doctest
#include "../scaled_fp32.hpp"
#include "worker.hpp"

#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <limits>

#if ACC_HAS_GLOO
namespace {

template <class Strategy>
void overflow_on_one_rank() {
  acc::Accelerator<Strategy, ScaledFP32> accelerator;
  const int rank = accelerator.process_index();
  torch::manual_seed(1);
  torch::nn::Linear net(4, 2);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.1));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  // The weight in full (FSDP frees the gathered parameters between steps).
  auto weight = [&] {
    if constexpr (acc::shards_model_v<Strategy>) {
      for (const auto& [name, value] : accelerator.strategy().full_state(*net))
        if (name == "weight") return value.clone();
      return at::Tensor();
    } else {
      return net->weight.detach().clone();
    }
  };
  for (int step = 0; step < 4; ++step) {
    const auto before = weight();
    optimizer.zero_grad();
    // in steps 1 and 3 the last rank alone produces an inf loss
    const bool overflow_here = step % 2 == 1 && rank == accelerator.num_processes() - 1;
    const double factor = overflow_here ? std::numeric_limits<double>::infinity() : 1.0;
    accelerator.backward(model(at::ones({2, 4}) * (rank + 1)).sum() * factor);
    optimizer.step();
    CHECK(optimizer.step_was_skipped() == (step % 2 == 1));
    const auto after = weight();
    CHECK(at::equal(before, after) == (step % 2 == 1));
    const auto scales = accelerator.gather_object(accelerator.scaler()->scale_value());
    for (const double scale : scales) CHECK(scale == scales[0]);
    const auto weights = accelerator.gather(after.reshape({1, -1}));
    CHECK(at::equal(weights[0], weights[weights.size(0) - 1]));
  }
  CHECK(accelerator.scaler()->scale_value() == 65536.0 / 4);
}

}  // namespace

// Run on their own: `acc_dist_worker --no-skip -ts=loss_scaling`.
TEST_SUITE("loss_scaling" * doctest::skip()) {
  TEST_CASE("an overflow on one rank only skips the step on every rank, and the scales stay equal") {
    overflow_on_one_rank<acc::CPU>();
  }
  TEST_CASE("with FSDP FULL_SHARD too: the overflow check covers every rank's shards") {
    overflow_on_one_rank<acc::FSDP<acc::Gloo, acc::FullShard>>();
  }
}
#endif
