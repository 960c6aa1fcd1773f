// BF16: the forward pass under bf16 autocast; fp32 parameters and gradients; no loss scaling
// (bf16 has fp32's exponent range).
#pragma once

#include <acc/precision/mixed.hpp>

#include <c10/core/ScalarType.h>

#include <string_view>

namespace acc {

struct BF16 : MixedPrecision<BF16, c10::ScalarType::BFloat16> {
  static constexpr std::string_view name = "bf16";
};

}  // namespace acc
