// Which layers of a model tensor parallelism has split (acc::tp::parallelize installed a split in
// them): what a strategy that treats every rank's model as a whole copy must refuse.
#pragma once

#include <acc/detail/linkage.hpp>

#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace acc::nn {

// The names (as named_modules() gives them) of the acc::nn::Linear and acc::nn::Embedding layers
// of `module` that hold a split, in module order; "" for `module` itself.
ACC_DECL std::vector<std::string> split_layer_names(const torch::nn::Module& module);

}  // namespace acc::nn

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/nn/impl/split_layers.ipp>
#endif
