// acc_sanity_check: what `acc test` runs under `acc launch` (Python's `accelerate test`). Through
// acc::run it creates the Accelerator the config selects, checks an all-reduce and a gather, trains
// a tiny model for a few steps on different data per rank, and checks that every rank ends with the
// same weights. The main process prints one line: passed, or what failed on which rank.
#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/functional.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kSteps = 5;

std::string describe(const at::Tensor& tensor) {
  std::ostringstream text;
  text << "[";
  const auto values = tensor.to(at::kCPU, at::kDouble).reshape({-1});
  for (int64_t i = 0; i < values.size(0); ++i) text << (i ? ", " : "") << values[i].item<double>();
  text << "]";
  return text.str();
}

// The model's whole parameters as one row on the accelerator's device: FSDP's are gathered from
// the shards (a collective), the others are the module's own.
template <class Accelerator, class Model>
at::Tensor flat_weights(Accelerator& accelerator, const Model& model) {
  std::vector<at::Tensor> pieces;
  if constexpr (acc::shards_model_v<typename Accelerator::strategy_type>) {
    for (const auto& [name, value] : accelerator.strategy().full_state(*model))
      pieces.push_back(value.detach().reshape({-1}).to(accelerator.device(), at::kFloat));
  } else {
    for (const auto& parameter : model.unwrap()->parameters())
      pieces.push_back(parameter.detach().reshape({-1}).to(accelerator.device(), at::kFloat));
  }
  return at::cat(pieces).unsqueeze(0);
}

// The checks of this rank; returns what failed here (empty: nothing).
template <class Accelerator>
std::vector<std::string> run_checks(Accelerator& accelerator) {
  std::vector<std::string> failures;
  const int world = accelerator.num_processes();
  const int rank = accelerator.process_index();
  const auto on_device = at::TensorOptions().device(accelerator.device()).dtype(at::kFloat);

  // 1. All-reduce: the sum of rank + 1 over the ranks.
  const auto sum = accelerator.reduce(at::full({3}, rank + 1.0, on_device), acc::ReduceOp::sum);
  const double expected_sum = world * (world + 1) / 2.0;
  if (!at::equal(sum.cpu(), at::full({3}, expected_sum)))
    failures.push_back("all-reduce (sum of rank + 1) gave " + describe(sum) + ", expected " +
                       std::to_string(static_cast<int>(expected_sum)) + " in each element");

  // 2. Gather: each rank's index, in rank order.
  const auto gathered = accelerator.gather(at::full({1, 2}, static_cast<double>(rank), on_device));
  const auto expected_gather = at::arange(world, at::kFloat).unsqueeze(1).expand({world, 2});
  if (gathered.sizes() != expected_gather.sizes() || !at::equal(gathered.cpu(), expected_gather))
    failures.push_back("gather of the ranks' indices gave " + describe(gathered) + ", expected rows 0.." +
                       std::to_string(world - 1));

  // 3. Training: different initial weights per rank (prepare must start every rank from rank 0's)
  // and different data per rank (the gradients must be averaged for the weights to stay equal).
  accelerator.set_seed(1234, /*device_specific=*/true);
  torch::nn::Sequential net(torch::nn::Linear(8, 16), torch::nn::Functional(torch::relu), torch::nn::Linear(16, 1));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  const auto initial = flat_weights(accelerator, model);

  auto generator = at::make_generator<at::CPUGeneratorImpl>(100 + static_cast<uint64_t>(rank));
  const auto x = at::randn({16, 8}, generator).to(accelerator.device());
  const auto y = x.sum(1, /*keepdim=*/true);
  int skipped = 0;
  for (int step = 0; step < kSteps; ++step) {
    optimizer.zero_grad();
    const auto loss = torch::nn::functional::mse_loss(model(x).to(at::kFloat), y);
    if (!std::isfinite(loss.item().toDouble())) {
      failures.push_back("the loss of step " + std::to_string(step + 1) + " is " + describe(loss));
      break;
    }
    accelerator.backward(loss);
    optimizer.step();
    if (optimizer.step_was_skipped()) ++skipped;
  }

  // 4. The weights: the same on every rank, and moved by the steps that were not skipped (fp16).
  const auto final_weights = flat_weights(accelerator, model);
  const auto all = accelerator.gather(final_weights);
  // Every rank gathered the same rows: rank 0 alone reports a difference, once.
  for (int64_t other = 1; other < all.size(0) && rank == 0; ++other)
    if (!at::equal(all[other], all[0]))
      failures.push_back("after " + std::to_string(kSteps) + " training steps the weights of rank " +
                         std::to_string(other) + " differ from rank 0's (largest difference " +
                         std::to_string((all[other] - all[0]).abs().max().item().toDouble()) + ")");
  if (skipped < kSteps && at::equal(final_weights, initial))
    failures.push_back(std::to_string(kSteps) + " training steps left the weights unchanged");
  return failures;
}

template <class Accelerator>
int check(Accelerator& accelerator) {
  using Strategy = typename Accelerator::strategy_type;
  using Precision = typename Accelerator::precision_type;
  const std::string setup =
      "distributed_type=" + Strategy::spelling() + ", mixed_precision=" + std::string(Precision::name);
  const int world = accelerator.num_processes();

  std::string mine;
  for (const std::string& failure : run_checks(accelerator)) mine += (mine.empty() ? "" : "; ") + failure;
  // Every rank learns every rank's verdict, so that all of them exit alike.
  const std::vector<std::string> verdicts = accelerator.gather_object(mine);
  std::string failed;
  for (std::size_t rank = 0; rank < verdicts.size(); ++rank)
    if (!verdicts[rank].empty())
      failed += (failed.empty() ? "" : "; ") + ("rank " + std::to_string(rank) + ": " + verdicts[rank]);
  if (accelerator.is_main_process()) {
    if (failed.empty())
      std::cout << "acc test: passed on " << world << " process" << (world == 1 ? "" : "es") << " (" << setup << ")"
                << std::endl;
    else
      std::cerr << "acc test: FAILED on " << world << " process" << (world == 1 ? "" : "es") << " (" << setup
                << "): " << failed << std::endl;
  }
  return failed.empty() ? 0 : 1;
}

}  // namespace

int main() {
  const char* rank = std::getenv("RANK");
  try {
    auto config = acc::Config::from_environment();
    // The check uses no data loader: one sampler is enough, whatever the config names.
    config.sampler = std::string(acc::Sequential::name);
    return acc::run(
        config, [](auto& accelerator) { return check(accelerator); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Sequential>);
  } catch (const std::exception& e) {
    std::cerr << "acc test: FAILED on rank " << (rank ? rank : "0") << ": " << e.what() << std::endl;
    return 1;
  }
}
