// acc::free_memory(): gives the device memory that libtorch keeps cached back to the device.
#pragma once

#include <acc/detail/build_config.hpp>

#include <torch/cuda.h>

#if ACC_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace acc {

// What torch.cuda.empty_cache() does, and so Accelerate's release_memory()/free_memory() after they
// drop their references: the CUDA caching allocator returns the blocks no tensor uses, for other
// processes and for allocations that need one large block. In C++ a tensor's memory is unused once
// its last owner is gone, so there is nothing to collect first. Without CUDA it does nothing.
inline void free_memory() {
#if ACC_HAS_CUDA
  if (torch::cuda::is_available()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

}  // namespace acc
