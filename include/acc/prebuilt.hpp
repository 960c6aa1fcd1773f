// The strategy halves of the Accelerators that acc::run builds by default (every strategy this
// build has; see run.hpp), compiled once into acc::compiled when ACC_SEPARATE_COMPILATION is
// defined: a program's translation units then declare them (extern template) instead of
// instantiating them, and src/acc.cpp, which defines ACC_DETAIL_BUILDS_PREBUILT, instantiates them.
// Header-only, this header declares nothing.
#pragma once

#include <acc/accelerator_base.hpp>
#include <acc/comm/gloo.hpp>
#include <acc/comm/nccl.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/strategy/ddp.hpp>
#include <acc/strategy/fsdp.hpp>
#include <acc/strategy/single.hpp>

#if defined(ACC_SEPARATE_COMPILATION)
#if defined(ACC_DETAIL_BUILDS_PREBUILT)
#define ACC_DETAIL_PREBUILT template
#else
#define ACC_DETAIL_PREBUILT extern template
#endif

namespace acc::detail {
ACC_DETAIL_PREBUILT class AcceleratorBase<Single>;
#if ACC_HAS_GLOO
ACC_DETAIL_PREBUILT class AcceleratorBase<DDP<Gloo>>;
#endif
#if ACC_HAS_NCCL
ACC_DETAIL_PREBUILT class AcceleratorBase<DDP<Nccl>>;
ACC_DETAIL_PREBUILT class AcceleratorBase<FSDP<Nccl, FullShard>>;
#endif
}  // namespace acc::detail

#undef ACC_DETAIL_PREBUILT
#endif
