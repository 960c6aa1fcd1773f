// What the strategies that take a model split by acc::tp::parallelize share (DDP and FSDP told the
// mesh's tp size): the check that the split is the one they were told, the whole weights joined
// from a tp group's slices and cut again, and the gradient norm that counts each slice and each
// tensor left whole once.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/error.hpp>
#include <acc/nn/split_layers.hpp>
#include <acc/strategy/process_group.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace acc::detail {

// A strategy told tensor-parallel groups of `tp` ranks (`options` names the struct it reads the
// size from, `action` what it does over the ranks holding the same slices) takes a split model
// exactly when tp > 1, each split layer's group being this rank's tp consecutive ranks.
inline void check_tensor_parallel_split(const torch::nn::Module& module,
                                        const std::map<std::string, nn::SplitTensor>& split, int64_t tp, int rank,
                                        const std::string& strategy, const std::string& options,
                                        const std::string& action) {
  const std::string setting = "(parallelism_config_tp_size, " + options + "::tp_size)";
  const std::string told = strategy + " was told tensor-parallel groups of " + std::to_string(tp) + " ranks " + setting;
  if (split.empty()) {
    if (tp > 1)
      throw Error(told +
                  ", but the model given to prepare has no layer split by acc::tp::parallelize; split it over "
                  "an acc::DeviceMesh's tp group before prepare (docs/tensor_parallelism.md), or set the "
                  "tensor-parallel size to 1");
    return;
  }
  if (tp == 1)
    refuse_tensor_parallel_model(module, strategy,
                                 "give " + strategy + " the mesh's tp size " + setting + ", and it " + action +
                                     " the ranks that hold the same slices");
  for (const auto& [name, tensor] : split)
    if (tensor.split->group_size() != tp || tensor.split->group_rank() != rank % tp)
      throw Error(strategy + ": '" + name + "' is split over " + std::to_string(tensor.split->group_size()) +
                  " ranks, this rank holding slice " + std::to_string(tensor.split->group_rank()) + ", but " + told +
                  ", where rank r holds slice r % " + std::to_string(tp) +
                  "; split the model over an acc::DeviceMesh with that tp size");
}

// The split entries of `state` joined from their tp group's slices (a collective over each
// group: every rank calls it), gathered on `device` (the communicator's) and left on the CPU.
inline void join_split_tensors(std::vector<std::pair<std::string, at::Tensor>>& state,
                               const std::map<std::string, nn::SplitTensor>& split, c10::Device device) {
  for (auto& [name, value] : state)
    if (const auto cut = split.find(name); cut != split.end())
      value = nn::join_slices(cut->second.split->all_gather(value.to(device)), cut->second.layout).to(at::kCPU);
}

// A whole state with this rank's slice in place of each split entry it holds.
inline std::map<std::string, at::Tensor> slice_split_tensors(std::map<std::string, at::Tensor> state,
                                                             const std::map<std::string, nn::SplitTensor>& split) {
  for (const auto& [name, cut] : split)
    if (const auto found = state.find(name); found != state.end())
      found->second = nn::slice_of(found->second, cut.layout.dim, cut.layout.parts, cut.split->group_rank(),
                                   cut.split->group_size());
  return state;
}

// One part's share of a gradient norm, in double: the p-th power of its norm, or its largest
// magnitude for p = inf.
inline at::Tensor norm_share(const at::Tensor& part, double norm_type) {
  return std::isinf(norm_type) ? part.abs().max().to(at::kDouble) : part.norm(norm_type).to(at::kDouble).pow(norm_type);
}

// The p-th power of the gradient norm of a split model (the largest magnitude for p = inf) from
// each rank's shares: `cut` of slices, `whole` of what every rank of a tp group holds alike. One
// all-reduce over `world`, where each slice's share arrives `cut_copies` times (once per rank
// holding the same slice) and each whole one `cut_copies * tp` times.
template <class Comm>
at::Tensor tensor_parallel_norm(Comm& world, const std::vector<at::Tensor>& cut, const std::vector<at::Tensor>& whole,
                                double norm_type, double cut_copies, int64_t tp) {
  const bool infinity = std::isinf(norm_type);
  const auto combined = [&](const std::vector<at::Tensor>& parts) {
    if (parts.empty()) return at::zeros({}, at::TensorOptions(world.device()).dtype(at::kDouble));
    const auto stacked = at::stack(parts).to(world.device());
    return infinity ? stacked.max() : stacked.sum();
  };
  at::Tensor sums = at::stack({combined(cut), combined(whole)});
  world.all_reduce(sums, infinity ? ReduceOp::max : ReduceOp::sum);
  if (infinity) return sums.max().reshape({1});
  return (sums[0] / cut_copies + sums[1] / (cut_copies * static_cast<double>(tp))).reshape({1});
}

// Scales `tensors`' gradients so that their norm, whose p-th power (or, for p = inf, value) is
// `total`, is at most max_norm (with torch::nn::utils::clip_grad_norm_'s 1e-6 beside the norm);
// returns the norm.
inline double clip_to_norm(const at::Tensor& total, double max_norm, double norm_type,
                           const std::vector<at::Tensor>& tensors) {
  const double norm = std::isinf(norm_type) ? total.item<double>() : std::pow(total.item<double>(), 1.0 / norm_type);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1)
    for (const auto& t : tensors)
      if (t.grad().defined()) t.grad().mul_(coefficient);
  return norm;
}

}  // namespace acc::detail
