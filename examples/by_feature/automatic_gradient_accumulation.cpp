// The C++ twin of Accelerate's examples/by_feature/automatic_gradient_accumulation.py:
// find_executable_batch_size looks for a micro-batch that fits the device, and gradient
// accumulation makes up the rest of the batch the run wants (--observed_batch_size), so that
// training sees that batch whatever the device holds. On a CPU nothing runs out of memory, so a
// simulated device (examples/common/simulated_memory.hpp) throws the CUDA allocator's error for
// batches larger than --device_memory examples. It checks what the script promises: the
// micro-batch fits, micro-batch x accumulation steps is the observed batch, and the weights are
// those of training with the whole observed batch at once (on a device with room for it).
//
//   build/bin/automatic_gradient_accumulation --observed_batch_size 64 --device_memory 20
//   build/bin/acc launch --cpu --num_processes 2 build/bin/automatic_gradient_accumulation
#include "../common/flags.hpp"
#include "../common/float64_training.hpp"
#include "../common/simulated_memory.hpp"

#include <acc/acc.hpp>

#include <cstdint>
#include <iostream>

namespace {

struct Settings {
  examples::Float64Training training;
  int64_t observed_batch_size = 64;  // per process and optimizer step
  int64_t device_memory = 20;        // the largest batch the simulated device holds
};

// The largest divisor of `batch` that is at most `limit`. Python divides the observed batch by the
// size that fits (observed // batch_size), exact while the decorator halved the size; since it
// backs off by 0.9 (as acc::find_executable_batch_size does) that quotient no longer multiplies
// back to the observed batch (64 // 19 = 3), so the micro-batch is rounded down to a divisor.
int64_t largest_divisor_at_most(int64_t batch, int64_t limit) {
  int64_t divisor = limit;
  while (batch % divisor != 0) --divisor;
  return divisor;
}

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  const int64_t observed = s.observed_batch_size;
  examples::require_whole_large_batches(s.training, observed, accelerator.num_processes());
  const examples::SimulatedMemory device{s.device_memory};
  int64_t micro_batch = 0, accumulation = 0;
  const auto automatic = acc::find_executable_batch_size(  // acc
      [&](int64_t batch_size) {
        micro_batch = largest_divisor_at_most(observed, batch_size);
        accumulation = observed / micro_batch;
        // free_memory and gradient_accumulation_steps(accumulation), then the training loop
        return examples::train_float64(accelerator, s.training, micro_batch, accumulation,
                                       [&](const at::Tensor& inputs) { device.hold(inputs.size(0)); });
      },
      observed);
  const auto whole = examples::train_float64(accelerator, s.training, observed, 1, [](const at::Tensor&) {});
  const double largest = examples::largest_difference(automatic, whole);
  accelerator.print("micro-batches of", micro_batch, "x", accumulation, "accumulation steps for batches of", observed,
                    "(device memory", s.device_memory, "examples) on", accelerator.num_processes(),
                    "processes: largest weight difference from whole batches", largest);
  if (micro_batch > s.device_memory || micro_batch * accumulation != observed ||
      !(largest < examples::kSummationOrderTolerance)) {
    std::cerr << "automatic_gradient_accumulation: expected micro-batches that fit the device, accumulated to the "
                 "observed batch, training the weights that whole batches train\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("automatic_gradient_accumulation",
                  "Trains with the observed batch size through the largest micro-batch that fits the device.")
      .add("--epochs", s.training.epochs, "passes over the training set")
      .add("--observed_batch_size", s.observed_batch_size, "examples per optimizer step and process")
      .add("--device_memory", s.device_memory, "the largest batch the simulated device has room for")
      .add("--lr", s.training.lr, "SGD's learning rate")
      .add("--train_size", s.training.train_size, "training examples")
      .add("--seed", s.training.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    // Float64 weights: the comparison is exact up to summation order only without mixed precision.
    return acc::run(  // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<acc::FP32>);
  } catch (const std::exception& e) {
    std::cerr << "automatic_gradient_accumulation: " << e.what() << "\n";
    return 1;
  }
}
