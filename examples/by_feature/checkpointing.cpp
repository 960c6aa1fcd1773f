// The C++ twin of Accelerate's examples/by_feature/checkpointing.py: save_state every
// --checkpointing_steps optimizer steps (or after every epoch with "epoch") under --output_dir as
// step_<n> or epoch_<n>, and --resume_from_checkpoint to go on from one of them. load_state
// restores the model, optimizer, scheduler, random generators and the loader's position, so a
// resumed run ends with the very weights of an uninterrupted one (the ctests compare the two
// output_dir/final/model.safetensors files byte for byte).
//
//   build/bin/checkpointing --output_dir runs/full --checkpointing_steps 7
//   build/bin/checkpointing --output_dir runs/resumed --resume_from_checkpoint runs/full/step_14
#include "../common/accuracy.hpp"
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

namespace {

struct Settings {
  int64_t epochs = 3;
  int64_t batch_size = 16;
  double lr = 1e-2;
  int64_t train_size = 512;
  int64_t eval_size = 301;
  int64_t seed = 0;
  std::string checkpointing_steps = "epoch";  // "epoch", or a number of optimizer steps
  std::string resume_from_checkpoint;         // a directory that save_state wrote
  std::string output_dir = "checkpointing_run";
};

// Where a checkpoint directory's name says training was: after epoch N, or after step N.
struct Position {
  int64_t epoch = 0;  // the first epoch still to train
  int64_t step = 0;   // optimizer steps done
};

Position position_of(const std::filesystem::path& checkpoint, int64_t steps_per_epoch) {
  const std::string name = checkpoint.filename().string();
  try {
    if (name.rfind("epoch_", 0) == 0) {
      const int64_t epoch = std::stoll(name.substr(6));
      return {epoch + 1, (epoch + 1) * steps_per_epoch};
    }
    if (name.rfind("step_", 0) == 0) {
      const int64_t step = std::stoll(name.substr(5));
      return {step / steps_per_epoch, step};
    }
  } catch (const std::exception&) {
  }
  throw acc::Error("--resume_from_checkpoint " + checkpoint.string() +
                   ": the directory's name must be epoch_<n> or step_<n>, as this program writes them");
}

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  const auto seed = static_cast<uint64_t>(s.seed);
  const bool every_epoch = s.checkpointing_steps == "epoch";
  const int64_t every = every_epoch ? 0 : std::stoll(s.checkpointing_steps);
  const std::filesystem::path output_dir = s.output_dir;
  accelerator.set_seed(seed);
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  // Python's get_linear_schedule_with_warmup; its whole state is in each checkpoint. The prepared
  // scheduler steps once per process and optimizer step, so the schedule counts batches of one
  // process's size whatever the number of processes (and a checkpoint resumes with another).
  const int64_t batches_per_epoch = (s.train_size + s.batch_size - 1) / s.batch_size;
  acc::optim::LinearSchedule sched(
      opt, acc::optim::WarmupOptions().warmup_steps(10).total_steps(s.epochs * batches_per_epoch));
  const auto options = acc::DataLoaderOptions(s.batch_size).seed(seed);
  auto [model, optimizer, train_loader, eval_loader, scheduler] = accelerator.prepare(  // acc
      net, opt, acc::DataLoader(examples::Points(s.train_size, seed + 1), options),
      acc::DataLoader(examples::Points(s.eval_size, seed + 2), acc::DataLoaderOptions(options).shuffle(false)), sched);

  Position at;
  if (!s.resume_from_checkpoint.empty()) {
    accelerator.load_state(s.resume_from_checkpoint);  // acc: the loader goes on at the saved batch
    at = position_of(s.resume_from_checkpoint, static_cast<int64_t>(train_loader.size()));
    accelerator.print("resumed from", s.resume_from_checkpoint, "at epoch", at.epoch, "step", at.step);
  }
  for (int64_t epoch = at.epoch; epoch < s.epochs; ++epoch) {
    train_loader.set_epoch(epoch);
    for (auto& batch : train_loader) {
      accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));  // acc
      optimizer.step();
      scheduler.step();
      optimizer.zero_grad();
      ++at.step;
      if (every > 0 && at.step % every == 0)
        accelerator.save_state(output_dir / ("step_" + std::to_string(at.step)));  // acc
    }
    accelerator.print("epoch", epoch, "accuracy", examples::accuracy(accelerator, model, eval_loader));
    if (every_epoch) accelerator.save_state(output_dir / ("epoch_" + std::to_string(epoch)));  // acc
  }
  accelerator.wait_for_everyone();                      // acc
  accelerator.save_model(model, output_dir / "final");  // acc: final/model.safetensors
  accelerator.print("saved", (output_dir / "final").string(), "after step", at.step);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("checkpointing", "Saves the training state as it goes, and resumes from a saved state.")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--train_size", s.train_size, "training examples")
      .add("--eval_size", s.eval_size, "evaluation examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .add("--checkpointing_steps", s.checkpointing_steps, "'epoch', or save every this many optimizer steps")
      .add("--resume_from_checkpoint", s.resume_from_checkpoint, "a step_<n> or epoch_<n> directory to resume from")
      .add("--output_dir", s.output_dir, "where checkpoints and the final model go")
      .parse(argc, argv);
  try {
    const auto& steps = s.checkpointing_steps;
    if (steps != "epoch" && (steps.empty() || steps.find_first_not_of("0123456789") != std::string::npos ||
                             steps.find_first_not_of('0') == std::string::npos))
      throw acc::Error("--checkpointing_steps '" + steps + "': use 'epoch' or a positive number of steps");
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "checkpointing: " << e.what() << "\n";
    return 1;
  }
}
