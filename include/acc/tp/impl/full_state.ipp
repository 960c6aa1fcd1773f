// The bodies of tp/full_state.hpp.
#pragma once

#include <acc/detail/module_state.hpp>
#include <acc/error.hpp>
#include <acc/nn/split_layers.hpp>
#include <acc/tp/full_state.hpp>

#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace acc::tp::detail {

namespace {

std::string sizes_text(const std::vector<int64_t>& sizes) {
  std::string text = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

}  // namespace

ACC_DECL void load_full_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state, int rank,
                              int ranks) {
  const auto split = nn::split_tensors(module);
  auto own = acc::detail::module_state(module);
  // Every entry is checked before anything is copied.
  std::vector<at::Tensor> sources;
  for (const auto& [name, tensor] : own) {
    const auto found = state.find(name);
    if (found == state.end())
      throw Error("acc::tp::load_full_state: the state has no '" + name + "'; give the whole model's state " +
                  "(acc::tp::full_state, or the unsplit model's checkpoint)");
    auto expected = tensor.sizes().vec();
    const auto cut = split.find(name);
    if (cut != split.end()) expected[static_cast<std::size_t>(cut->second.layout.dim)] *= ranks;
    if (found->second.sizes().vec() != expected)
      throw Error("acc::tp::load_full_state: '" + name + "' is " + acc::detail::shape_text(found->second) +
                  " in the state, but the unsplit model's is " + sizes_text(expected));
    sources.push_back(cut == split.end()
                          ? found->second
                          : nn::slice_of(found->second, cut->second.layout.dim, cut->second.layout.parts, rank, ranks));
  }
  if (state.size() != own.size()) {
    std::set<std::string> names;
    for (const auto& entry : own) names.insert(entry.first);
    std::string unexpected;
    for (const auto& entry : state)
      if (!names.count(entry.first)) unexpected += (unexpected.empty() ? "'" : ", '") + entry.first + "'";
    throw Error("acc::tp::load_full_state: the state holds " + unexpected +
                ", which the model does not have; give the state of this model");
  }
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < own.size(); ++i) own[i].second.copy_(sources[i]);
}

}  // namespace acc::tp::detail
