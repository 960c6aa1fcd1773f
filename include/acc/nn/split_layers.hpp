// Which layers of a model tensor parallelism has split (acc::tp::parallelize installed a split in
// them), and how their tensors are cut: what a strategy that treats every rank's model as a whole
// copy must refuse, what one that shards over the other ranks (FSDP beside tensor parallelism) and
// a checkpoint that saves the whole weights read.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/nn/tensor_split.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace acc::nn {

// The names (as named_modules() gives them) of the acc::nn::Linear and acc::nn::Embedding layers
// of `module` that hold a split, in module order; "" for `module` itself.
ACC_DECL std::vector<std::string> split_layer_names(const torch::nn::Module& module);

// A tensor of a split layer: its cut (a split bias is cut as its weight's rows) and the layer's
// split, which knows the group.
struct SplitTensor {
  ShardLayout layout;
  TensorSplit* split = nullptr;
};

// The split layers' cut tensors by name ("blocks.0.qkv.weight"); a bias left whole is not one.
ACC_DECL std::map<std::string, SplitTensor> split_tensors(const torch::nn::Module& module);

// Rank `rank`'s slice of `full` cut over `ranks`: dimension `dim` seen as `parts` equal blocks, each
// cut on its own (what acc::tp::parallelize keeps).
ACC_DECL at::Tensor slice_of(const at::Tensor& full, int64_t dim, int64_t parts, int rank, int ranks);

// The whole tensor from the group's slices, in rank order.
ACC_DECL at::Tensor join_slices(const std::vector<at::Tensor>& slices, const ShardLayout& layout);

}  // namespace acc::nn

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/nn/impl/split_layers.ipp>
#endif
