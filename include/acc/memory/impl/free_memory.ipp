#pragma once

#include <acc/detail/build_config.hpp>
#include <acc/memory/free_memory.hpp>

#include <torch/cuda.h>

#if ACC_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace acc {

ACC_DECL void free_memory() {
#if ACC_HAS_CUDA
  if (torch::cuda::is_available()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

}  // namespace acc
