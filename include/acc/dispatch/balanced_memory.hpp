// acc::balanced_memory(model, max_memory, options): budgets under which acc::infer_auto_device_map
// spreads a model evenly over the GPUs instead of filling the first (Python Accelerate's
// get_balanced_memory, behind device_map "auto", "balanced" and "balanced_low_0"):
//
//   auto budgets = acc::balanced_memory(model, {{"0", "40GiB"}, {"1", "40GiB"}, {"cpu", "64GiB"}},
//                                       acc::BalancedMemoryOptions().no_split({"GptBlock"}));
//   auto map = acc::infer_auto_device_map(model, budgets, acc::DeviceMapOptions{{"GptBlock"}});
//
// With G GPUs of a non-zero budget and a model of S bytes, each GPU but the last gets
// S / G + a margin, at most its own budget; the last keeps its budget, in case the margin is not
// enough. The margin is 1.25 x the larger of the largest unit of a `no_split` class and the mean
// size of the units that hold no other unit, so that rounding to whole units does not push the
// tail of the model onto the CPU. With low_zero (device_map "balanced_low_0") GPU 0 keeps only
// what the other GPUs cannot hold (it has room for generate()'s outputs) and the model spreads
// over the others. With one GPU nothing changes. Other devices' budgets ("cpu", "disk") are kept.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/dispatch/memory_size.hpp>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace acc {

struct BalancedMemoryOptions {
  // Classes (Module::name()) never split across devices, as DeviceMapOptions::no_split.
  BalancedMemoryOptions& no_split(std::vector<std::string> classes) {
    no_split_ = std::move(classes);
    return *this;
  }
  // GPU 0 holds as little as it can (device_map "balanced_low_0").
  BalancedMemoryOptions& low_zero(bool on) {
    low_zero_ = on;
    return *this;
  }
  const std::vector<std::string>& no_split() const { return no_split_; }
  bool low_zero() const { return low_zero_; }

 private:
  std::vector<std::string> no_split_;
  bool low_zero_ = false;
};

ACC_DECL MaxMemory balanced_memory(const std::shared_ptr<torch::nn::Module>& model, const MaxMemory& max_memory,
                                   const BalancedMemoryOptions& options = {});

template <class Impl>
MaxMemory balanced_memory(const torch::nn::ModuleHolder<Impl>& model, const MaxMemory& max_memory,
                          const BalancedMemoryOptions& options = {}) {
  return balanced_memory(std::shared_ptr<torch::nn::Module>(model.ptr()), max_memory, options);
}

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/balanced_memory.ipp>
#endif
