// Bodies of include/acc/nn/split_layers.hpp.
#pragma once

#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/nn/split_layers.hpp>

#include <ATen/ops/cat.h>

namespace acc::nn {

namespace {

// The split installed in `module` if it is a layer that holds one.
TensorSplit* split_of(const torch::nn::Module& module) {
  if (const auto* linear = dynamic_cast<const LinearImpl*>(&module)) return linear->split();
  if (const auto* embedding = dynamic_cast<const EmbeddingImpl*>(&module)) return embedding->split();
  return nullptr;
}

// The sizes with dimension `dim` seen as `parts` blocks of `block`.
std::vector<int64_t> blocked_sizes(at::IntArrayRef sizes, int64_t dim, int64_t parts, int64_t block) {
  std::vector<int64_t> blocked(sizes.begin(), sizes.begin() + dim);
  blocked.push_back(parts);
  blocked.push_back(block);
  blocked.insert(blocked.end(), sizes.begin() + dim + 1, sizes.end());
  return blocked;
}

}  // namespace

ACC_DECL std::vector<std::string> split_layer_names(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& item : module.named_modules())
    if (split_of(*item.value())) names.push_back(item.key());
  return names;
}

ACC_DECL std::map<std::string, SplitTensor> split_tensors(const torch::nn::Module& module) {
  std::map<std::string, SplitTensor> tensors;
  for (const auto& item : module.named_modules()) {
    auto* split = split_of(*item.value());
    if (!split) continue;
    const auto prefix = item.key().empty() ? std::string() : item.key() + ".";
    const auto& layout = split->layout();
    tensors[prefix + "weight"] = {layout, split};
    if (layout.bias_split && item.value()->named_parameters(/*recurse=*/false).contains("bias"))
      tensors[prefix + "bias"] = {{0, layout.parts, true}, split};
  }
  return tensors;
}

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

}  // namespace acc::nn
