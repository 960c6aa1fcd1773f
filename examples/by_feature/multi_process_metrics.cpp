// The C++ twin of Accelerate's examples/by_feature/multi_process_metrics.py: evaluation on every
// process, with gather_for_metrics bringing each process's predictions together and dropping the
// examples that even batches repeated at the end, so that metrics count every example exactly
// once. It checks that: the gathered predictions are, in order, those of the whole evaluation set
// predicted by one process (--eval_size 301 is a prime: no number of processes divides it).
//
//   build/bin/multi_process_metrics
//   build/bin/acc launch --cpu --num_processes 3 build/bin/multi_process_metrics
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Settings {
  int64_t epochs = 2;
  int64_t batch_size = 16;
  double lr = 1e-2;
  int64_t train_size = 512;
  int64_t eval_size = 301;
  int64_t seed = 0;
};

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  const auto seed = static_cast<uint64_t>(s.seed);
  accelerator.set_seed(seed);
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  const examples::Points eval_set(s.eval_size, seed + 2);
  auto [model, optimizer, train_loader, eval_loader] = accelerator.prepare(  // acc
      net, opt, acc::DataLoader(examples::Points(s.train_size, seed + 1), acc::DataLoaderOptions(s.batch_size)),
      acc::DataLoader(eval_set, acc::DataLoaderOptions(s.batch_size).shuffle(false)));
  for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
    train_loader.set_epoch(epoch);
    for (auto& batch : train_loader) {
      accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));  // acc
      optimizer.step();
      optimizer.zero_grad();
    }
  }

  at::NoGradGuard no_grad;
  std::vector<at::Tensor> predictions, labels;
  for (auto& batch : eval_loader) {
    predictions.push_back(accelerator.gather_for_metrics(model(batch.data).argmax(1)));  // acc
    labels.push_back(accelerator.gather_for_metrics(batch.target));                      // acc
  }
  const auto gathered = at::cat(predictions).cpu(), gathered_labels = at::cat(labels).cpu();
  const auto accuracy = acc::item<double>(gathered.eq(gathered_labels).to(at::kDouble).mean());
  // The same model on every process: one process's prediction of the whole set, in order.
  const auto whole = model(eval_set.inputs.to(accelerator.device())).argmax(1).cpu();
  const bool exact = gathered.numel() == s.eval_size && gathered.equal(whole) && gathered_labels.equal(eval_set.labels);
  accelerator.print("accuracy", accuracy, "over", gathered.numel(), "examples gathered from",
                    accelerator.num_processes(),
                    "processes; each example exactly once, in order:", exact ? "yes" : "no");
  if (!exact) {
    std::cerr << "multi_process_metrics: the gathered predictions are not the evaluation set's, once each\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("multi_process_metrics", "Evaluates on every process and gathers the predictions for metrics.")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--train_size", s.train_size, "training examples")
      .add("--eval_size", s.eval_size, "evaluation examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "multi_process_metrics: " << e.what() << "\n";
    return 1;
  }
}
