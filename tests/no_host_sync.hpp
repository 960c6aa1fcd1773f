// A scope in which any CUDA call that waits for the GPU (a copy to the host, a synchronize) throws:
// the check that a step is sync-free. CUDA builds only.
#pragma once

#include <c10/cuda/CUDAFunctions.h>

struct NoHostSync {
  NoHostSync() { c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR); }
  ~NoHostSync() { c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED); }
  NoHostSync(const NoHostSync&) = delete;
  NoHostSync& operator=(const NoHostSync&) = delete;
};
