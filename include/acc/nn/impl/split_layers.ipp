// Bodies of include/acc/nn/split_layers.hpp.
#pragma once

#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/nn/split_layers.hpp>

namespace acc::nn {

ACC_DECL std::vector<std::string> split_layer_names(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& item : module.named_modules()) {
    const auto* linear = dynamic_cast<const LinearImpl*>(item.value().get());
    const auto* embedding = dynamic_cast<const EmbeddingImpl*>(item.value().get());
    if ((linear && linear->split()) || (embedding && embedding->split())) names.push_back(item.key());
  }
  return names;
}

}  // namespace acc::nn
