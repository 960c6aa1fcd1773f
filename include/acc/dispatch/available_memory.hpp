// acc::available_memory(): what each device of this machine has free now, as a max_memory (Python
// Accelerate's get_max_memory): every visible GPU's free memory ("0", "1", ...) and the host's
// available memory ("cpu", MemAvailable of /proc/meminfo). No "disk": a model that fits in neither
// is an error rather than a silent spill. device_map "auto", "balanced", "balanced_low_0" and
// "sequential" plan within it when options.max_memory names no budget.
//
//   std::cout << acc::available_memory().at("cpu").bytes();
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/dispatch/memory_size.hpp>

namespace acc {

ACC_DECL MaxMemory available_memory();

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/available_memory.ipp>
#endif
