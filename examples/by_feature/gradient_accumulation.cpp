// The C++ twin of Accelerate's examples/by_feature/gradient_accumulation.py: accumulate(model)
// around each micro-batch, so that gradients are all-reduced and the optimizer steps only every
// --gradient_accumulation_steps batches. It checks what accumulation promises: k micro-batches of
// b examples train the model exactly as batches of k * b examples do (it trains both ways).
//
//   build/bin/gradient_accumulation --gradient_accumulation_steps 4
//   build/bin/acc launch --cpu --num_processes 2 build/bin/gradient_accumulation
#include "../common/flags.hpp"
#include "../common/float64_training.hpp"

#include <acc/acc.hpp>

#include <cstdint>
#include <iostream>

namespace {

struct Settings {
  examples::Float64Training training;
  int64_t batch_size = 8;  // of a micro-batch, per process
  int64_t gradient_accumulation_steps = 4;
};

template <class Accelerator>
int compare(Accelerator& accelerator, const Settings& s) {
  const int64_t k = s.gradient_accumulation_steps;
  examples::require_whole_large_batches(s.training, s.batch_size * k, accelerator.num_processes());
  const auto no_check = [](const at::Tensor&) {};
  const auto accumulated = examples::train_float64(accelerator, s.training, s.batch_size, k, no_check);
  const auto large = examples::train_float64(accelerator, s.training, s.batch_size * k, 1, no_check);
  const double largest = examples::largest_difference(accumulated, large);
  accelerator.print("gradient accumulation over", k, "micro-batches vs batches", k, "times larger, on",
                    accelerator.num_processes(), "processes: largest weight difference", largest);
  if (!(largest < examples::kSummationOrderTolerance)) {
    std::cerr << "gradient_accumulation: the two ways trained different weights\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("gradient_accumulation",
                  "Accumulates gradients over micro-batches, and checks it against large batches.")
      .add("--epochs", s.training.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per micro-batch and process")
      .add("--lr", s.training.lr, "SGD's learning rate")
      .add("--gradient_accumulation_steps", s.gradient_accumulation_steps, "micro-batches per optimizer step")
      .add("--train_size", s.training.train_size, "training examples")
      .add("--seed", s.training.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    // Float64 weights: the comparison is exact up to summation order only without mixed precision.
    return acc::run(  // acc
        config, [&](auto& accelerator) { return compare(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<acc::FP32>);
  } catch (const std::exception& e) {
    std::cerr << "gradient_accumulation: " << e.what() << "\n";
    return 1;
  }
}
