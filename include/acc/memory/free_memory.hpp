// acc::free_memory(): gives the device memory that libtorch keeps cached back to the device.
#pragma once

#include <acc/detail/linkage.hpp>

namespace acc {

// What torch.cuda.empty_cache() does, and so Accelerate's release_memory()/free_memory() after they
// drop their references: the CUDA caching allocator returns the blocks no tensor uses, for other
// processes and for allocations that need one large block. In C++ a tensor's memory is unused once
// its last owner is gone, so there is nothing to collect first. Without CUDA it does nothing.
ACC_DECL void free_memory();

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/memory/impl/free_memory.ipp>
#endif
