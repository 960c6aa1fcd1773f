// Which modules are units, and what runs around their forward. libtorch's C++ modules have no
// forward hooks, so a unit is called through acc::Unit (include/acc/fsdp/unit.hpp), which looks
// its module up here: modules declared as units are recorded when their acc::Unit is made, the
// FSDP strategy (or acc::dispatch_model) installs hooks for the ones it wraps, and activation
// checkpointing marks those whose forward recomputes in backward.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace acc::detail {

// What runs around one unit's forward: the FSDP strategy's gathering, or dispatch_model's placement.
class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  virtual void before_forward() = 0;
  virtual void after_forward(const std::vector<at::Tensor>& outputs) = 0;
  // Where the unit runs, when its call must move its tensor inputs there (and its tensor outputs
  // back to where the inputs were).
  virtual std::optional<c10::Device> input_device() const { return std::nullopt; }
};

// What a unit's call does besides its forward.
struct UnitCall {
  UnitHooks* hooks = nullptr;  // the FSDP strategy's or dispatch_model's, if one wraps the unit
  bool recompute = false;      // activation checkpointing (acc::checkpoint around the forward)
};

class UnitRegistry {
 public:
  static UnitRegistry& instance() {
    static UnitRegistry registry;
    return registry;
  }
  void declare(const std::shared_ptr<torch::nn::Module>& module) {
    std::lock_guard<std::mutex> lock(mutex_);
    declared_[module.get()] = module;
  }
  bool is_declared(const torch::nn::Module& module) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = declared_.find(&module);
    return found != declared_.end() && !found->second.expired();
  }
  void install(const torch::nn::Module& module, UnitHooks* hooks) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (hooks)
      hooks_[&module] = hooks;
    else
      hooks_.erase(&module);
    installed_ = hooks_.size() + recompute_.size();
  }
  void recompute(const std::shared_ptr<torch::nn::Module>& module, bool enabled) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (enabled)
      recompute_[module.get()] = module;
    else
      recompute_.erase(module.get());
    installed_ = hooks_.size() + recompute_.size();
  }
  UnitCall call(const torch::nn::Module& module) {
    if (installed_ == 0) return {};  // no FSDP, no checkpointing in this process: no lock on every unit call
    std::lock_guard<std::mutex> lock(mutex_);
    const auto hooks = hooks_.find(&module);
    const auto recompute = recompute_.find(&module);
    return {hooks == hooks_.end() ? nullptr : hooks->second,
            recompute != recompute_.end() && !recompute->second.expired()};
  }

 private:
  std::mutex mutex_;
  // Weak: a module that is gone must not make a new one at its address look declared.
  std::unordered_map<const torch::nn::Module*, std::weak_ptr<torch::nn::Module>> declared_;
  std::unordered_map<const torch::nn::Module*, UnitHooks*> hooks_;
  std::unordered_map<const torch::nn::Module*, std::weak_ptr<torch::nn::Module>> recompute_;
  std::atomic<std::size_t> installed_{0};
};

}  // namespace acc::detail
