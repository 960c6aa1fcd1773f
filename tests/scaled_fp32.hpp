// A precision policy for tests: FP32 with FP16's loss scaler, so that the GradScaler's logic runs
// on CPUs with any libtorch (FP16 needs CPU fp16 autocast, which 1.13 lacks). That it is FP32
// with one piece replaced is what policies that bring their behaviour allow.
#pragma once

#include <acc/precision/fp32.hpp>
#include <acc/precision/grad_scaler.hpp>

#include <string_view>

struct ScaledFP32 : acc::FP32 {
  static constexpr std::string_view name = "scaled-fp32";
  using loss_scaler = acc::GradScaler;
};
