// How a communicator treats its collectives (Python's InitProcessGroupKwargs, and Accelerate's
// debug mode): how long one may take before it fails, and whether ranks compare each collective
// before running it.
#pragma once

#include <acc/config/environment.hpp>

#include <torch/arg.h>

#include <chrono>
#include <cstdlib>

namespace acc {

namespace detail {

inline std::chrono::seconds collective_timeout_from_environment() {
  const char* value = std::getenv("ACC_COLLECTIVE_TIMEOUT");
  if (!value) return std::chrono::seconds(1800);  // InitProcessGroupKwargs' default
  return std::chrono::seconds(parse_env_int("ACC_COLLECTIVE_TIMEOUT", value, 1, 1 << 24, "a number of seconds"));
}

inline bool debug_mode_from_environment() {
  const char* value = std::getenv("ACCELERATE_DEBUG_MODE");
  return value && parse_env_bool("ACCELERATE_DEBUG_MODE", value);
}

}  // namespace detail

class ProcessGroupOptions {
 public:
  // A collective not done after this long fails on the rank that waits for it, naming itself
  // (ACC_COLLECTIVE_TIMEOUT seconds, YAML acc.collective_timeout; 1800 s by default).
  TORCH_ARG(std::chrono::seconds, timeout) = detail::collective_timeout_from_environment();
  // Before each collective, every rank publishes what it is about to call (operation, dtype,
  // shape) and checks the others': a mismatch is an error on every rank instead of a hang or
  // garbage (YAML debug, ACCELERATE_DEBUG_MODE). Costs a round trip to rank 0's store per
  // collective; off, it costs one branch.
  TORCH_ARG(bool, debug) = detail::debug_mode_from_environment();
};

}  // namespace acc
