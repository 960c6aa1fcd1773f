// The bodies of tp/full_state.hpp.
#pragma once

#include <acc/detail/module_state.hpp>
#include <acc/error.hpp>
#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/tp/full_state.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace acc::tp::detail {

namespace {

// The sizes with dimension `dim` seen as `parts` blocks of `block`.
std::vector<int64_t> blocked_sizes(at::IntArrayRef sizes, int64_t dim, int64_t parts, int64_t block) {
  std::vector<int64_t> blocked(sizes.begin(), sizes.begin() + dim);
  blocked.push_back(parts);
  blocked.push_back(block);
  blocked.insert(blocked.end(), sizes.begin() + dim + 1, sizes.end());
  return blocked;
}

std::string sizes_text(const std::vector<int64_t>& sizes) {
  std::string text = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

}  // namespace

ACC_DECL at::Tensor slice_of(const at::Tensor& full, int64_t dim, int64_t parts, int rank, int ranks) {
  auto sizes = full.sizes().vec();
  const int64_t block = sizes[static_cast<std::size_t>(dim)] / parts, slice = block / ranks;
  sizes[static_cast<std::size_t>(dim)] = parts * slice;
  return full.reshape(blocked_sizes(full.sizes(), dim, parts, block))
      .narrow(dim + 1, rank * slice, slice)
      .reshape(sizes);
}

ACC_DECL at::Tensor join_slices(const std::vector<at::Tensor>& slices, const ShardLayout& layout) {
  std::vector<at::Tensor> blocked;
  for (const auto& slice : slices)
    blocked.push_back(
        slice.reshape(blocked_sizes(slice.sizes(), layout.dim, layout.parts, slice.size(layout.dim) / layout.parts)));
  auto sizes = slices.front().sizes().vec();
  sizes[static_cast<std::size_t>(layout.dim)] *= static_cast<int64_t>(slices.size());
  return at::cat(blocked, layout.dim + 1).reshape(sizes);
}

ACC_DECL std::map<std::string, ShardLayout> split_tensors(const torch::nn::Module& module) {
  std::map<std::string, ShardLayout> tensors;
  for (const auto& item : module.named_modules()) {
    const auto prefix = item.key().empty() ? std::string() : item.key() + ".";
    const Sharded* sharded = nullptr;
    if (const auto* linear = dynamic_cast<const nn::LinearImpl*>(item.value().get()))
      sharded = dynamic_cast<const Sharded*>(linear->split());
    else if (const auto* embedding = dynamic_cast<const nn::EmbeddingImpl*>(item.value().get()))
      sharded = dynamic_cast<const Sharded*>(embedding->split());
    if (!sharded) continue;
    tensors[prefix + "weight"] = sharded->layout();
    if (sharded->layout().bias_split) tensors[prefix + "bias"] = {0, sharded->layout().parts, true};
  }
  return tensors;
}

ACC_DECL void load_full_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state, int rank,
                              int ranks) {
  const auto split = split_tensors(module);
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
    if (cut != split.end()) expected[static_cast<std::size_t>(cut->second.dim)] *= ranks;
    if (found->second.sizes().vec() != expected)
      throw Error("acc::tp::load_full_state: '" + name + "' is " + acc::detail::shape_text(found->second) +
                  " in the state, but the unsplit model's is " + sizes_text(expected));
    sources.push_back(cut == split.end() ? found->second
                                         : slice_of(found->second, cut->second.dim, cut->second.parts, rank, ranks));
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
