// What the strategies that hold the whole model on every rank (Single, DDP) share: the forward is
// the model's own (a Sequential model's children called as units, for activation checkpointing), and a checkpoint's
// model state is each rank's parameters and buffers (the main process writes them), loaded as it is.
#pragma once

#include <acc/detail/module_state.hpp>
#include <acc/fsdp/unit.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {

struct ReplicatedModel {
  // The model's full state and one optimizer state over its parameters, on the main process.
  static constexpr std::string_view checkpoint_layout = "replicated";

  template <class Holder, class... Args>
  static auto forward(Holder& module, Args&&... args) {
    if constexpr (detail::is_sequential_v<Holder>)
      return detail::forward_sequential(module, std::forward<Args>(args)...);
    else
      return module->forward(std::forward<Args>(args)...);
  }
  static std::vector<std::pair<std::string, at::Tensor>> full_state(const torch::nn::Module& module) {
    return detail::module_state(module);
  }
  static void load_full_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state) {
    detail::load_module_state(module, state);
  }
};

}  // namespace acc
