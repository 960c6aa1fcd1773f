// A device with room for at most `capacity` examples in a training batch, for the examples of
// find_executable_batch_size on machines that never run out of memory (a CPU, in CI): a larger
// batch throws what the CUDA caching allocator throws when a real one does not fit,
// c10::OutOfMemoryError, which find_executable_batch_size recognises and answers with a smaller
// batch. Every process holds batches of the same size, so all of them fail together, before any
// collective of the step: a real out-of-memory error on one rank alone would leave the others
// waiting in the next collective.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

namespace examples {

struct SimulatedMemory {
  int64_t capacity;

  void hold(int64_t examples) const {
    TORCH_CHECK_WITH(OutOfMemoryError, examples <= capacity,
                     "CUDA out of memory. Tried to allocate a batch of " + std::to_string(examples) +
                         " examples; the device has room for " + std::to_string(capacity) + " (simulated)");
  }
};

}  // namespace examples
