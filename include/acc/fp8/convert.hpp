// Which of a model's acc::nn::Linear layers acc::FP8 runs in fp8, and installing its matmul there.
// Other layers (torch::nn::Linear included) run as under bf16 autocast.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/fp8/recipe.hpp>

#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace acc::fp8 {

// The names (as named_modules spells them) of the acc::nn::Linear layers the recipe puts in fp8:
// not the first and last (unless keep_first_and_last_in_bf16 is off), not those whose dimensions
// are not multiples of 16, and only those the recipe's filter accepts.
ACC_DECL std::vector<std::string> layers_in_fp8(torch::nn::Module& model, const FP8Recipe& recipe);

// Installs the fp8 matmul (ScaledLinear) in each of those layers and returns their names; an
// acc::Error naming the requirement where this build or device has no fp8.
ACC_DECL std::vector<std::string> convert_to_fp8(torch::nn::Module& model, const FP8Recipe& recipe);

}  // namespace acc::fp8

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/fp8/impl/convert.ipp>
#endif
