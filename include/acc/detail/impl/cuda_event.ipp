// The bodies of detail/cuda_event.hpp, and the event's box for the .ipp files that use it.
#pragma once

#include <acc/detail/cuda_event.hpp>

#if ACC_HAS_CUDA || ACC_HAS_NCCL
#include <ATen/cuda/CUDAEvent.h>

namespace acc::detail {

struct CudaEventBox {
  at::cuda::CUDAEvent event;
};

ACC_DECL void CudaEventDeleter::operator()(CudaEventBox* box) const { delete box; }

ACC_DECL CudaEvent make_cuda_event() { return CudaEvent(new CudaEventBox()); }

}  // namespace acc::detail
#endif
