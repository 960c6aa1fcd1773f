// acc::find_executable_batch_size(fn, start): runs fn(batch_size), retrying with a smaller batch
// size whenever it runs out of memory, as Accelerate's decorator of the same name does.
#pragma once

#include <acc/error.hpp>
#include <acc/memory/free_memory.hpp>

#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace acc {

namespace detail {

// Whether an error thrown by libtorch means "not enough memory". c10::OutOfMemoryError is what the
// CUDA caching allocator throws (in libtorch 1.13 as in 2.x); the CPU allocator and cuDNN throw a
// plain c10::Error, recognised by the messages Accelerate's should_reduce_batch_size looks for.
inline bool is_out_of_memory(const c10::Error& error) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error)) return true;
  constexpr std::array<std::string_view, 3> markers = {
      " out of memory.",                           // CUDA, HIP and XPU allocators
      "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",  // cuDNN's answer to too large a batch
      "DefaultCPUAllocator: can't allocate memory",
  };
  const std::string_view message = error.msg();
  for (const auto marker : markers)
    if (message.find(marker) != std::string_view::npos) return true;
  return false;
}

// Accelerate's back-off since its PR #3684: batch_size = int(batch_size * 0.9), so 128 -> 115 ->
// 103 -> ... -> 2 -> 1 -> 0 (the same doubles, so the same sizes, as Python's int()).
inline std::int64_t reduced_batch_size(std::int64_t batch_size) {
  return static_cast<std::int64_t>(static_cast<double>(batch_size) * 0.9);
}

}  // namespace detail

// Calls fn(batch_size) with batch_size = starting_batch_size and returns what it returns. When fn
// runs out of memory (see detail::is_out_of_memory), the cached device memory is freed and fn is
// called again with int(batch_size * 0.9), until it succeeds; every other exception propagates at
// once. Reaching batch size 0 throws acc::Error. fn builds everything that depends on the batch
// size (data loaders, and the model and optimizer when they are sized by it) inside, so that a
// failed attempt leaves nothing behind. Each process searches on its own: with several, make the
// failure collective (or use one size per process) so that no rank waits for the others forever.
template <class Fn>
auto find_executable_batch_size(Fn&& fn, std::int64_t starting_batch_size = 128) {
  static_assert(std::is_invocable_v<Fn&, std::int64_t>,
                "find_executable_batch_size calls fn(batch_size) with an std::int64_t: give it a callable that takes "
                "the batch size as its only argument, e.g. [&](std::int64_t batch_size) { ... }");
  if (starting_batch_size < 1)
    throw Error("find_executable_batch_size: starting_batch_size is " + std::to_string(starting_batch_size) +
                "; it must be at least 1");
  free_memory();
  std::string last_error;
  for (auto batch_size = starting_batch_size; batch_size > 0; batch_size = detail::reduced_batch_size(batch_size)) {
    try {
      return fn(batch_size);
    } catch (const c10::Error& error) {
      if (!detail::is_out_of_memory(error)) throw;
      last_error = error.msg();
    }
    free_memory();  // here, after the handler: the failed attempt's tensors and the exception are gone
  }
  throw Error("find_executable_batch_size: no executable batch size found, reached zero: every batch size from " +
              std::to_string(starting_batch_size) +
              " down to 1 ran out of memory (the last error: " + last_error.substr(0, last_error.find('\n')) +
              "); make the model or its inputs smaller, or use gradient accumulation, a sharded strategy or a "
              "lower precision");
}

}  // namespace acc
