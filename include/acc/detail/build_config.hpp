// Which optional backends this build has. CMake defines ACC_HAS_GLOO, ACC_HAS_NCCL and ACC_HAS_CUDA on
// acc::acc; a build without CMake detects them from the headers it can see.
#pragma once

#ifndef ACC_HAS_GLOO
#if __has_include(<gloo/algorithm.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#define ACC_HAS_GLOO 1
#else
#define ACC_HAS_GLOO 0
#endif
#endif

#ifndef ACC_HAS_NCCL
#if __has_include(<nccl.h>) && __has_include(<c10/cuda/CUDAStream.h>)
#define ACC_HAS_NCCL 1
#else
#define ACC_HAS_NCCL 0
#endif
#endif

// A libtorch with CUDA, whose c10_cuda library the program links (its headers alone are not enough:
// Debian's CPU libtorch ships them too).
#ifndef ACC_HAS_CUDA
#if __has_include(<cuda_runtime_api.h>) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#define ACC_HAS_CUDA 1
#else
#define ACC_HAS_CUDA 0
#endif
#endif

// fp8 training (acc::FP8): CMake's acc::fp8 library, the fused cast kernels compiled by nvcc where
// CUDA and libtorch >= 2.1 are, defines it; without them acc::FP8 is refused at run time.
#ifndef ACC_HAS_FP8
#define ACC_HAS_FP8 0
#endif
