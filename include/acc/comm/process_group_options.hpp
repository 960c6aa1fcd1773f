// How a communicator treats its collectives (Python's InitProcessGroupKwargs, and Accelerate's
// debug mode): how long one may take before it fails, and whether ranks compare each collective
// before running it. A plain value: the configuration layer (config/) fills it from the config
// file and the environment (ACC_COLLECTIVE_TIMEOUT, ACCELERATE_DEBUG_MODE).
#pragma once

#include <torch/arg.h>

#include <chrono>

namespace acc {

class ProcessGroupOptions {
 public:
  // A collective not done after this long fails on the rank that waits for it, naming itself
  // (ACC_COLLECTIVE_TIMEOUT seconds, YAML acc.collective_timeout; 1800 s by default, as
  // InitProcessGroupKwargs).
  TORCH_ARG(std::chrono::seconds, timeout) = std::chrono::seconds(1800);
  // Before each collective, every rank publishes what it is about to call (operation, dtype,
  // shape) and checks the others': a mismatch is an error on every rank instead of a hang or
  // garbage (YAML debug, ACCELERATE_DEBUG_MODE). Costs a round trip to rank 0's store per
  // collective; off, it costs one branch.
  TORCH_ARG(bool, debug) = false;
};

}  // namespace acc
