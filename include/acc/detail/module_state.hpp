// A module's state by name (its parameters and buffers, as Python's state_dict), and loading one
// back with every missing, unexpected or misshapen entry named: what the replicated strategies
// save and load in checkpoints.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace acc::detail {

inline std::vector<std::pair<std::string, at::Tensor>> module_state(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& p : module.named_parameters()) state.emplace_back(p.key(), p.value().detach());
  for (const auto& b : module.named_buffers()) state.emplace_back(b.key(), b.value().detach());
  return state;
}

inline std::string shape_text(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Throws an acc::Error naming every missing, unexpected and misshapen entry of `state` against
// the entries a model has (`own`).
ACC_DECL void check_state_fits(const std::vector<std::pair<std::string, at::Tensor>>& own,
                               const std::map<std::string, at::Tensor>& state);

// Copies `state` into the module's parameters and buffers in place (so that views of them, such
// as gradient buckets, stay valid), converting dtypes as Python's load_state_dict does. Checks
// everything first: a mismatch changes nothing.
inline void load_module_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state) {
  auto own = module_state(module);  // detached views of the module's tensors
  check_state_fits(own, state);
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : own) tensor.copy_(state.at(name));
}

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/detail/impl/module_state.ipp>
#endif
