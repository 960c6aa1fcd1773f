// FP16: the forward pass under fp16 autocast, fp32 parameters and gradients, dynamic loss scaling
// (acc::GradScaler) because fp16 overflows and underflows where fp32 does not. Autocast to fp16
// on the CPU needs libtorch 2.x: check_device says so on 1.13.
#pragma once

#include <acc/precision/grad_scaler.hpp>
#include <acc/precision/mixed.hpp>

#include <c10/core/ScalarType.h>

#include <string_view>

namespace acc {

struct FP16 : MixedPrecision<FP16, c10::ScalarType::Half> {
  static constexpr std::string_view name = "fp16";
  using loss_scaler = GradScaler;
};

}  // namespace acc
