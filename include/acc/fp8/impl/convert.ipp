// Bodies of include/acc/fp8/convert.hpp.
#pragma once

#include <acc/error.hpp>
#include <acc/fp8/convert.hpp>
#include <acc/fp8/scaled_linear.hpp>

#include <algorithm>
#include <memory>
#include <utility>

namespace acc::fp8 {
namespace detail {

inline std::vector<std::pair<std::string, nn::LinearImpl*>> linear_layers(torch::nn::Module& model) {
  std::vector<std::pair<std::string, nn::LinearImpl*>> layers;
  for (const auto& item : model.named_modules())
    if (auto* linear = dynamic_cast<nn::LinearImpl*>(item.value().get())) layers.emplace_back(item.key(), linear);
  return layers;
}

}  // namespace detail

ACC_DECL std::vector<std::string> layers_in_fp8(torch::nn::Module& model, const FP8Recipe& recipe) {
  const auto layers = detail::linear_layers(model);
  std::vector<std::string> chosen;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& [name, layer] = layers[i];
    const bool first_or_last = i == 0 || i + 1 == layers.size();
    if (recipe.keep_first_and_last_in_bf16() && first_or_last) continue;
    if (layer->options.in_features() % 16 != 0 || layer->options.out_features() % 16 != 0) continue;
    if (recipe.filter() && !recipe.filter()(name, *layer)) continue;
    chosen.push_back(name);
  }
  return chosen;
}

ACC_DECL std::vector<std::string> convert_to_fp8(torch::nn::Module& model, const FP8Recipe& recipe) {
  if (recipe.amax_history_len() < 1 || recipe.amax_history_len() > 1024)
    throw Error("FP8Recipe::amax_history_len (fp8_config's amax_history_len) is " +
                std::to_string(recipe.amax_history_len()) + "; it must be 1 to 1024");
  if (recipe.margin() < 0 || recipe.margin() > 30)
    throw Error("FP8Recipe::margin (fp8_config's margin) is " + std::to_string(recipe.margin()) +
                "; it must be 0 to 30 (scales are divided by 2^margin)");
  const auto chosen = layers_in_fp8(model, recipe);
  for (const auto& [name, layer] : detail::linear_layers(model))
    if (std::find(chosen.begin(), chosen.end(), name) != chosen.end())
      layer->set_matmul(std::make_shared<ScaledLinear>(recipe));
  return chosen;
}

}  // namespace acc::fp8
