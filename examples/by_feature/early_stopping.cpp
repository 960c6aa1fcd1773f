// The C++ twin of Accelerate's examples/by_feature/early_stopping.py: any process whose training
// loss falls below a threshold sets the trigger, and check_trigger() stops every process after the
// same step. It checks what the script shows: the run stopped early, at one step on every process.
//
//   build/bin/early_stopping
//   build/bin/acc launch --cpu --num_processes 2 build/bin/early_stopping --threshold 0.2
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <iostream>
#include <string>

namespace {

struct Settings {
  int64_t epochs = 20;
  int64_t batch_size = 16;
  double lr = 1e-2;
  double threshold = 0.25;  // the training loss that stops the run
  int64_t train_size = 512;
  int64_t seed = 0;
};

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  accelerator.set_seed(static_cast<uint64_t>(s.seed));
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  auto [model, optimizer, loader] = accelerator.prepare(  // acc
      net, opt,
      acc::DataLoader(examples::Points(s.train_size, static_cast<uint64_t>(s.seed) + 1),
                      acc::DataLoaderOptions(s.batch_size).seed(static_cast<uint64_t>(s.seed))));

  int64_t step = 0;
  bool stopped = false;
  for (int64_t epoch = 0; epoch < s.epochs && !stopped; ++epoch) {
    loader.set_epoch(epoch);
    for (auto& batch : loader) {
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      accelerator.backward(loss);  // acc
      optimizer.step();
      optimizer.zero_grad();
      ++step;
      if (acc::item<double>(loss) < s.threshold) accelerator.set_trigger();  // acc: this process wants to stop
      if (accelerator.check_trigger()) {                                     // acc: true on every process at once
        stopped = true;
        break;
      }
    }
  }

  const auto steps = accelerator.gather_object(step);  // acc
  bool same = true;
  for (const auto other : steps) same = same && other == step;
  accelerator.print("stopped early:", stopped ? "yes" : "no", "after step", step, "on", accelerator.num_processes(),
                    "processes; the same step everywhere:", same ? "yes" : "no");
  if (!stopped || !same) {
    std::cerr << "early_stopping: expected every process to stop early after the same step\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("early_stopping", "Stops every process at once when one's training loss falls below --threshold.")
      .add("--epochs", s.epochs, "passes over the training set at most")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--threshold", s.threshold, "the training loss below which a process sets the trigger")
      .add("--train_size", s.train_size, "training examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "early_stopping: " << e.what() << "\n";
    return 1;
  }
}
