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
    CHECK(same_parameters_on_every_rank(accelerator, *net));
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
    std::vector<bool> same_after_step;
    {
      acc::LocalSGD local_sgd(accelerator, model, k);
      for (auto& batch : loader) {  // 16 batches over the ranks
        accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));
        optimizer.step();
        optimizer.zero_grad();
        local_sgd.step();
        same_after_step.push_back(same_parameters_on_every_rank(accelerator, *net));
      }
    }
    // Averages are exact copies of one all-reduced value; between them each rank stepped on its own
    // batches (no gradient all-reduce), which moves the weights apart whenever there are two ranks.
    const bool several = accelerator.num_processes() > 1;
    for (std::size_t step = 1; step <= same_after_step.size(); ++step)
      CHECK_MESSAGE(same_after_step[step - 1] == (!several || step % k == 0), "after step " << step);
    CHECK(same_parameters_on_every_rank(accelerator, *net));  // leaving the scope averaged
  });
}

TEST_CASE("join_uneven_inputs: ranks out of batches average zeros until the last is done, then all hold its weights") {
  with_accelerator([](auto& accelerator) {
    constexpr int64_t kRows = 4;
    constexpr double kLr = 1e-2;
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const Blobs data;
    // Rank r has 5 - r batches (at least one); the s-th one of rank r is its own block of rows.
    const auto batches_of = [](int r) { return std::max(1, 5 - r); };
    const auto rows = [&](const at::Tensor& all, int r, int s) {
      return all.narrow(0, (s * world + r) * kRows % (64 - kRows + 1), kRows);
    };
    const auto loss_of = [](torch::nn::Linear& net, const at::Tensor& x, const at::Tensor& y) {
      return torch::nn::functional::cross_entropy(net(x.to(at::kDouble)), y);
    };

    // One process: the step s gradient is the sum of the gradients of the ranks that still have a
    // batch s, over all ranks (those that are done add zeros).
    torch::manual_seed(3);
    torch::nn::Linear reference(8, 3);
    reference->to(at::kDouble);
    torch::optim::AdamW reference_opt(reference->parameters(), torch::optim::AdamWOptions(kLr));
    for (int s = 0; s < batches_of(0); ++s) {
      reference_opt.zero_grad();
      at::Tensor loss = at::zeros({}, at::kDouble);
      for (int r = 0; r < world; ++r)
        if (s < batches_of(r)) loss = loss + loss_of(reference, rows(data.x, r, s), rows(data.y, r, s)) / world;
      loss.backward();
      reference_opt.step();
    }

    torch::manual_seed(3);
    torch::nn::Linear net(8, 3);
    net->to(at::kDouble);
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(kLr));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    {
      acc::JoinUnevenInputs join(accelerator, model);
      for (int s = 0; s < batches_of(rank); ++s) {
        const auto device = accelerator.device();
        accelerator.backward(loss_of(net, rows(data.x, rank, s).to(device), rows(data.y, rank, s).to(device)));
        optimizer.step();
        optimizer.zero_grad();
      }
    }
    CHECK(same_parameters_on_every_rank(accelerator, *net));  // broadcast copies
    // float64 on both sides: they differ by summation order only, which AdamW's drift bound covers.
    const auto ours = net->parameters();
    const auto theirs = reference->parameters();
    for (std::size_t i = 0; i < ours.size(); ++i)
      CHECK((ours[i].cpu() - theirs[i]).abs().max().template item<double>() < adamw_float64_drift(batches_of(0), kLr));
  });
}
