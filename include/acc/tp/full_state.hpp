// The whole weights of a model split by acc::tp::parallelize, and back: what save_model writes and
// what a checkpoint of the unsplit model loads from.
//
//   auto state = acc::tp::full_state(*model, mesh.tp());       // every rank of the group: all of it
//   if (mesh.global_rank() == 0) acc::save_model_files(state, "gpt", "5GB");  // Hugging Face's layout
//   ...
//   acc::tp::load_full_state(*model, mesh.tp(), state);        // each rank keeps its slices
//
// full_state gathers each split tensor over `comm`, the tp group the model was split over, and
// joins the slices as parallelize cut them (a fused q, k, v part by part); whole tensors are
// returned as they are. The names and order are the unsplit model's named_parameters() then
// named_buffers(). load_full_state takes every tensor of the model from `state` (whole, on any
// device), each rank its slice of the split ones; a missing, unexpected or misshapen entry is an
// acc::Error naming it, with the model unchanged.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/nn/split_layers.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace acc::tp {

namespace detail {

ACC_DECL void load_full_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state, int rank,
                              int ranks);

}  // namespace detail

template <class Comm>
std::vector<std::pair<std::string, at::Tensor>> full_state(const torch::nn::Module& module, Comm& comm) {
  const auto split = nn::split_tensors(module);
  auto state = acc::detail::module_state(module);
  for (auto& [name, tensor] : state)
    if (const auto cut = split.find(name); cut != split.end())
      tensor = nn::join_slices(comm.all_gather(tensor.contiguous()), cut->second.layout);
  return state;
}

template <class Comm>
void load_full_state(torch::nn::Module& module, Comm& comm, const std::map<std::string, at::Tensor>& state) {
  detail::load_full_state(module, state, comm.rank(), comm.world_size());
}

}  // namespace acc::tp

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tp/impl/full_state.ipp>
#endif
