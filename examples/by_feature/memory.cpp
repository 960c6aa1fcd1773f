// The C++ twin of Accelerate's examples/by_feature/memory.py: the training loop is a function of
// the batch size, handed to find_executable_batch_size, which calls it again with a smaller batch
// whenever it runs out of memory; each attempt frees what the last one prepared and builds the
// model, optimizer, loaders and schedule anew. On a CPU nothing runs out of memory, so a simulated
// device (examples/common/simulated_memory.hpp) throws the CUDA allocator's error for batches
// larger than --device_memory examples. It checks the search: the first attempt is
// --batch_size, every attempt abandoned was too large, smaller each time, and the one that ran
// fits; training with it gave batches of that size and learned the task.
//
//   build/bin/memory --batch_size 64 --device_memory 20
//   build/bin/acc launch --cpu --num_processes 2 build/bin/memory
#include "../common/accuracy.hpp"
#include "../common/flags.hpp"
#include "../common/points.hpp"
#include "../common/simulated_memory.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Settings {
  int64_t epochs = 4;
  int64_t batch_size = 64;     // the first one tried, per process
  int64_t device_memory = 20;  // the largest batch the simulated device holds
  double lr = 1e-2;
  int64_t train_size = 1024;
  int64_t eval_size = 301;
  int64_t seed = 0;
};

struct Outcome {
  int64_t batch_size;     // the one that ran
  int64_t largest_batch;  // the largest the training loader gave
  double accuracy;
};

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  const auto seed = static_cast<uint64_t>(s.seed);
  const examples::SimulatedMemory device{s.device_memory};
  std::vector<int64_t> attempts;
  const auto outcome = acc::find_executable_batch_size(  // acc
      [&](int64_t batch_size) {
        attempts.push_back(batch_size);
        accelerator.free_memory();  // acc: drop what the failed attempt prepared
        accelerator.set_seed(seed);
        torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
        torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
        const auto options = acc::DataLoaderOptions(batch_size).seed(seed);
        // Python's get_linear_schedule_with_warmup, sized by this attempt's batches per epoch.
        const int64_t per_step = batch_size * accelerator.num_processes();
        const int64_t steps = s.epochs * ((s.train_size + per_step - 1) / per_step);
        acc::optim::LinearSchedule sched(opt, acc::optim::WarmupOptions().warmup_steps(steps / 10).total_steps(steps));
        auto [model, optimizer, train_loader, eval_loader, scheduler] = accelerator.prepare(  // acc
            net, opt, acc::DataLoader(examples::Points(s.train_size, seed + 1), options),
            acc::DataLoader(examples::Points(s.eval_size, seed + 2), acc::DataLoaderOptions(options).shuffle(false)),
            sched);
        int64_t largest_batch = 0;
        for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
          train_loader.set_epoch(epoch);
          for (auto& batch : train_loader) {
            device.hold(batch.data.size(0));  // the forward pass's activations
            largest_batch = std::max(largest_batch, batch.data.size(0));
            accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));  // acc
            optimizer.step();
            scheduler.step();
            optimizer.zero_grad();
          }
        }
        return Outcome{batch_size, largest_batch, examples::accuracy(accelerator, model, eval_loader)};
      },
      s.batch_size);

  bool searched_right = attempts.front() == s.batch_size && attempts.back() == outcome.batch_size &&
                        outcome.batch_size <= s.device_memory;
  for (std::size_t i = 0; i + 1 < attempts.size(); ++i)
    searched_right = searched_right && attempts[i] > s.device_memory && attempts[i + 1] < attempts[i];
  std::string tried;
  for (const auto size : attempts) tried += " " + std::to_string(size);
  accelerator.print("batch sizes tried:" + tried + "; trained with", outcome.batch_size, "(device memory",
                    s.device_memory, "examples), largest batch", outcome.largest_batch, "on",
                    accelerator.num_processes(), "processes; accuracy", outcome.accuracy);
  // Chance is 0.25 (4 classes); the classes are linear in the inputs, which the model learns to
  // well above 0.8 in these epochs.
  if (!searched_right || outcome.largest_batch != outcome.batch_size || outcome.accuracy < 0.8) {
    std::cerr << "memory: expected smaller batch sizes until one fits the device, training with batches of that "
                 "size, and an accuracy of at least 0.8\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("memory", "Finds the largest batch size that fits the (simulated) device, and trains with it.")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per batch and process to try first")
      .add("--device_memory", s.device_memory, "the largest batch the simulated device has room for")
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
    std::cerr << "memory: " << e.what() << "\n";
    return 1;
  }
}
