// The bodies of dispatch/balanced_memory.hpp.
#pragma once

#include <acc/dispatch/balanced_memory.hpp>
#include <acc/dispatch/module_units.hpp>
#include <acc/dispatch/placement.hpp>
#include <acc/error.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>

namespace acc {

namespace detail {

// Bytes of a module's tensors, a tensor reachable under two names (tied) counted once.
inline uint64_t module_bytes(const torch::nn::Module& module) {
  std::set<const c10::TensorImpl*> seen;
  uint64_t bytes = 0;
  const auto add = [&](const at::Tensor& t) {
    if (seen.insert(t.unsafeGetTensorImpl()).second) bytes += tensor_bytes(t);
  };
  for (const auto& p : module.parameters()) add(p);
  for (const auto& b : module.buffers()) add(b);
  return bytes;
}

}  // namespace detail

ACC_DECL MaxMemory balanced_memory(const std::shared_ptr<torch::nn::Module>& model, const MaxMemory& max_memory,
                                   const BalancedMemoryOptions& options) {
  if (!model) throw Error("acc::balanced_memory: the model holder is empty");
  std::map<int, std::string> gpus;  // index -> its key in max_memory, in index order
  for (const auto& [name, size] : max_memory) {
    const Placement placement{std::string_view{name}};
    if (placement.is_gpu() && size.bytes() > 0 && !gpus.emplace(placement.gpu_index(), name).second)
      throw Error("max_memory names GPU " + std::to_string(placement.gpu_index()) + " twice");
  }
  if (gpus.size() < 2) return max_memory;

  const auto units = detail::model_units(model);
  const std::set<std::string> no_split(options.no_split().begin(), options.no_split().end());
  uint64_t largest_no_split = 0, leaf_bytes = 0, leaves = 0;
  for (std::size_t u = 1; u < units.size(); ++u) {
    const auto bytes = detail::module_bytes(*units[u].module);
    if (no_split.count(units[u].class_name)) largest_no_split = std::max(largest_no_split, bytes);
    if (units[u].children.empty()) {
      leaf_bytes += bytes;
      ++leaves;
    }
  }
  const uint64_t margin = std::max(largest_no_split, leaves ? leaf_bytes / leaves : 0) * 5 / 4;
  const uint64_t model_bytes = detail::module_bytes(*model);
  const uint64_t sharing = options.low_zero() ? gpus.size() - 1 : gpus.size();
  const uint64_t per_gpu = model_bytes / sharing + margin;

  MaxMemory balanced = max_memory;
  const auto budget = [&](const std::string& key) { return balanced.at(key).bytes(); };
  const auto last = std::prev(gpus.end());
  for (auto gpu = gpus.begin(); gpu != last; ++gpu)
    if (!(options.low_zero() && gpu == gpus.begin())) balanced.at(gpu->second) = std::min(per_gpu, budget(gpu->second));
  if (options.low_zero()) {
    uint64_t others = 0;
    for (auto gpu = std::next(gpus.begin()); gpu != gpus.end(); ++gpu) others += budget(gpu->second);
    const auto& first = gpus.begin()->second;
    balanced.at(first) = std::min(model_bytes > others ? model_bytes - others : 0, budget(first));
  }
  return balanced;
}

}  // namespace acc
