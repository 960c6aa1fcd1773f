#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

namespace {

struct Blobs {
  at::Tensor x, y;
  Blobs() {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(7);
    x = at::randn({64, 8}, generator);
    y = x.narrow(1, 0, 3).argmax(1);
  }
  std::size_t size() const { return 64; }
  torch::data::Example<> get(std::size_t i) const { return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]}; }
};

}  // namespace

TEST_CASE("training: ranks start from rank 0's weights and stay identical after every step") {
  with_accelerator([](auto& accelerator) {
    accelerator.set_seed(1234, /*device_specific=*/true);  // different initial weights per rank
    torch::nn::Sequential net(torch::nn::Linear(8, 16), torch::nn::Functional(torch::relu), torch::nn::Linear(16, 3));
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, 4));
    int steps = 0;
    for (auto& batch : loader) {
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      accelerator.backward(loss);
      optimizer.step();
      ++steps;
    }
    const int world = accelerator.num_processes();
    CHECK(steps == (16 + world - 1) / world);  // 16 batches, evened out across ranks
    for (const auto& p : net->parameters()) {
      const auto mine = p.detach().reshape({1, -1});
      const auto all = accelerator.gather(mine);
      for (int64_t r = 1; r < all.size(0); ++r) CHECK(at::equal(all[r], all[0]));
    }
  });
}

TEST_CASE("check_trigger: a trigger set on the last rank stops every rank at the same step, then clears") {
  with_accelerator([](auto& accelerator) {
    const int last = accelerator.num_processes() - 1;
    CHECK_FALSE(accelerator.check_trigger());
    int stopped_at = -1;
    for (int step = 0; step < 10; ++step) {
      if (accelerator.process_index() == last && step == 4) accelerator.set_trigger();
      if (accelerator.check_trigger()) {
        stopped_at = step;
        break;
      }
    }
    for (const int step : accelerator.gather_object(stopped_at)) CHECK(step == 4);
    CHECK_FALSE(accelerator.check_trigger());
  });
}

TEST_CASE(
    "LocalSGD: ranks step apart between averages, and hold the same weights after every K-th step and at the end") {
  with_accelerator([](auto& accelerator) {
    constexpr int64_t k = 3;
    accelerator.set_seed(99, /*device_specific=*/true);
    torch::nn::Linear net(8, 3);
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, 4));
    const auto same_on_every_rank = [&] {
      bool same = true;
      for (const auto& p : net->parameters()) {
        const auto all = accelerator.gather(p.detach().reshape({1, -1}));
        for (int64_t r = 1; r < all.size(0); ++r) same = same && at::equal(all[r], all[0]);
      }
      return same;
    };
    std::vector<bool> same_after_step;
    {
      acc::LocalSGD local_sgd(accelerator, model, k);
      for (auto& batch : loader) {  // 16 batches over the ranks
        accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));
        optimizer.step();
        optimizer.zero_grad();
        local_sgd.step();
        same_after_step.push_back(same_on_every_rank());
      }
    }
    // Averages are exact copies of one all-reduced value; between them each rank stepped on its own
    // batches (no gradient all-reduce), which moves the weights apart whenever there are two ranks.
    const bool several = accelerator.num_processes() > 1;
    for (std::size_t step = 1; step <= same_after_step.size(); ++step)
      CHECK_MESSAGE(same_after_step[step - 1] == (!several || step % k == 0), "after step " << step);
    CHECK(same_on_every_rank());  // leaving the scope averaged
  });
}
