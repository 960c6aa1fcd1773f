// FP8: the Linear layers a recipe chooses (acc::nn::Linear; by default all but the first and the
// last) multiply in fp8 through at::_scaled_mm with scales of their own; everything else runs as
// under BF16 (bf16 autocast, fp32 master weights, no loss scaling). Needs a GPU with fp8 matrix
// multiplies (compute capability 8.9 or newer) and a build with the fp8 kernels (ACC_HAS_FP8);
// elsewhere it is refused with what to use instead. See docs/precision.md for when it pays off.
#pragma once

#include <acc/error.hpp>
#include <acc/fp8/convert.hpp>
#include <acc/fp8/recipe.hpp>
#include <acc/fp8/scaled_linear.hpp>
#include <acc/precision/mixed.hpp>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <string>
#include <string_view>

namespace acc {

struct FP8 : MixedPrecision<FP8, c10::ScalarType::BFloat16> {
  static constexpr std::string_view name = "fp8";
  using options_type = FP8Recipe;

  static void check_device(c10::Device device) {
    if (const auto reason = fp8::unsupported_reason(device); !reason.empty())
      throw Error("--mixed_precision fp8 (mixed_precision: fp8) cannot run here: " + reason +
                  "; use --mixed_precision bf16 (acc::BF16), which keeps the same model and checkpoints");
    MixedPrecision::check_device(device);
  }

  // fp32 master weights, as BF16; then the recipe's layers get the fp8 matmul.
  static void prepare_module(torch::nn::Module& module, const FP8Recipe& recipe) {
    MixedPrecision::prepare_module(module);
    fp8::convert_to_fp8(module, recipe);
  }
};

}  // namespace acc
