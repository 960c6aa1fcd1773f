#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/memory/find_executable_batch_size.hpp>
#include <acc/memory/free_memory.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#if ACC_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

// The error the CUDA caching allocator throws, built as TORCH_CHECK_WITH builds it.
[[noreturn]] void throw_cuda_out_of_memory() {
  TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("find_executable_batch_size backs off by 0.9 as Accelerate does and returns what fn returns") {
  std::vector<std::int64_t> tried;
  const auto result = acc::find_executable_batch_size(
      [&](std::int64_t batch_size) {
        tried.push_back(batch_size);
        if (batch_size > 100) throw_cuda_out_of_memory();
        return batch_size * 2;
      },
      128);
  CHECK(tried == std::vector<std::int64_t>{128, 115, 103, 92});
  CHECK(result == 184);

  // The sizes Python's int(batch_size * 0.9) gives from 256 (Accelerate PR #4160's list).
  tried.clear();
  acc::find_executable_batch_size(
      [&](std::int64_t batch_size) {
        tried.push_back(batch_size);
        if (tried.size() < 9) throw_cuda_out_of_memory();
      },
      256);
  CHECK(tried == std::vector<std::int64_t>{256, 230, 207, 186, 167, 150, 135, 121, 108});
}

TEST_CASE("find_executable_batch_size retries on the CPU allocator's real out-of-memory error") {
  std::vector<std::int64_t> tried;
  const auto bytes = acc::find_executable_batch_size(
      [&](std::int64_t batch_size) {
        tried.push_back(batch_size);
        // 1 PiB per sample is beyond any address space: the allocator fails for real.
        const std::int64_t per_sample = batch_size > 10 ? std::int64_t{1} << 50 : 16;
        return torch::empty({batch_size, per_sample}, torch::kByte).numel();
      },
      16);
  CHECK(tried == std::vector<std::int64_t>{16, 14, 12, 10});
  CHECK(bytes == 160);
}

TEST_CASE("find_executable_batch_size lets other errors through and stops at zero with a clear error") {
  int calls = 0;
  CHECK_THROWS_WITH_AS(acc::find_executable_batch_size(
                           [&](std::int64_t) {
                             ++calls;
                             TORCH_CHECK(false, "mat1 and mat2 shapes cannot be multiplied");
                           },
                           64),
                       doctest::Contains("shapes cannot be multiplied"), c10::Error);
  CHECK(calls == 1);
  CHECK_THROWS_AS(acc::find_executable_batch_size([&](std::int64_t) { throw std::out_of_range("index 7"); }, 8),
                  std::out_of_range);

  std::vector<std::int64_t> tried;
  CHECK_THROWS_WITH_AS(acc::find_executable_batch_size(
                           [&](std::int64_t batch_size) {
                             tried.push_back(batch_size);
                             throw_cuda_out_of_memory();
                           },
                           12),
                       doctest::Contains("reached zero: every batch size from 12 down to 1 ran out of memory (the last "
                                         "error: CUDA out of memory. Tried to allocate 2.00 GiB)"),
                       acc::Error);
  CHECK(tried == std::vector<std::int64_t>{12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1});

  CHECK_THROWS_WITH_AS(acc::find_executable_batch_size([](std::int64_t) {}, 0),
                       "find_executable_batch_size: starting_batch_size is 0; it must be at least 1", acc::Error);
}

#if ACC_HAS_CUDA
TEST_CASE("CUDA: free_memory gives the allocator's cached blocks back to the device" *
          doctest::skip(!torch::cuda::is_available())) {
  // This process's memory held by the allocator, in use or cached ([0]: summed over its pools), so
  // that other processes on the device do not matter.
  const auto reserved = [] { return c10::cuda::CUDACachingAllocator::getDeviceStats(0).reserved_bytes[0].current; };
  constexpr std::int64_t block = std::int64_t{512} << 20;
  torch::empty({block}, torch::dtype(torch::kByte).device(torch::kCUDA));
  const auto cached = reserved();  // the tensor is gone, its block stays with the allocator
  REQUIRE(cached >= block);
  acc::free_memory();
  CHECK(reserved() <= cached - block);
}
#endif
