// A CUDA event held by pointer, made and destroyed in impl/cuda_event.ipp: a header that keeps one
// needs no CUDA header, so that ATen/cuda/CUDAEvent.h (and with it the CUDA runtime's and cuBLAS's
// headers) stays out of the programs' translation units when the library is compiled separately.
// The .ipp files that use the event include impl/cuda_event.ipp, which defines CudaEventBox.
#pragma once

#include <acc/detail/build_config.hpp>
#include <acc/detail/linkage.hpp>

#if ACC_HAS_CUDA || ACC_HAS_NCCL
#include <memory>

namespace acc::detail {

struct CudaEventBox;  // { at::cuda::CUDAEvent event; }
struct CudaEventDeleter {
  ACC_DECL void operator()(CudaEventBox* box) const;
};
using CudaEvent = std::unique_ptr<CudaEventBox, CudaEventDeleter>;

// A new event; as at::cuda::CUDAEvent, it is created on the device at its first record.
ACC_DECL CudaEvent make_cuda_event();

}  // namespace acc::detail
#endif

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/detail/impl/cuda_event.ipp>
#endif
