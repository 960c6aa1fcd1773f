// acc::Unit<Holder>: declares a submodule a unit. It is the module holder it wraps (register it,
// call it, `->` into it) and, under the FSDP strategy, gathers the unit's parameters before its
// forward and frees them after (libtorch's C++ modules have no forward hooks, so the call must
// pass through here); after acc::dispatch_model, runs it on its device (moving its tensor inputs
// there and its tensor outputs back) with its offloaded weights brought in; with activation
// checkpointing (acc::checkpoint_units), its forward keeps no activations and recomputes in
// backward. Otherwise a call costs one atomic load.
//
//   struct ModelImpl : torch::nn::Module {
//     ModelImpl() {
//       for (int i = 0; i < 12; ++i) blocks.emplace_back(register_module("block" + std::to_string(i), Block()));
//     }
//     at::Tensor forward(at::Tensor x) {
//       for (auto& block : blocks) x = block(x);
//       return x;
//     }
//     std::vector<acc::Unit<Block>> blocks;
//   };
//
// The children of a torch::nn::Sequential model are units too when the strategy calls them (FSDP,
// and with checkpointing Single and DDP): detail::forward_sequential.
#pragma once

#include <acc/activation_checkpointing/checkpoint.hpp>
#include <acc/detail/tensor_tree.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/unit_registry.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {
namespace detail {

template <class Holder>
inline constexpr bool is_sequential_v = std::is_base_of_v<torch::nn::SequentialImpl, typename Holder::ContainedType>;
// The same for a module whose holder's type is gone (the strategies' model-independent code).
inline bool is_sequential(const torch::nn::Module& module) {
  return dynamic_cast<const torch::nn::SequentialImpl*>(&module) != nullptr;
}

template <class Output>
void after_unit_forward(UnitHooks& hooks, const Output& output) {
  std::vector<at::Tensor> tensors;
  if constexpr (is_tensor_tree_v<Output>) for_each_tensor(output, [&](const at::Tensor& t) { tensors.push_back(t); });
  hooks.after_forward(tensors);
}

[[noreturn]] inline void cannot_recompute(const torch::nn::Module& module, const std::string& why) {
  throw Error("activation checkpointing of unit " + module.name() + ": " + why +
              "; acc::checkpoint keeps tensors (and containers of them) only. Turn checkpointing off for it with "
              "acc::checkpoint_units(module, false), or call acc::checkpoint inside its forward around the part "
              "that does");
}

// The device of the first tensor among a unit's inputs, if there is one. (Not const: an
// AnyValue shows what it holds only to a non-const caller.)
template <class... Args>
std::optional<c10::Device> first_tensor_device(Args&... args) {
  std::optional<c10::Device> device;
  const auto look = [&](auto& value) {
    using Value = std::decay_t<decltype(value)>;
    if constexpr (std::is_same_v<Value, torch::nn::AnyValue>) {
      const auto* tensor = value.template try_get<at::Tensor>();
      if (!device && tensor && tensor->defined()) device = tensor->device();
    } else if constexpr (is_tensor_tree_v<Value>) {
      for_each_tensor(value, [&](const at::Tensor& t) {
        if (!device && t.defined()) device = t.device();
      });
    }
  };
  (look(args), ...);
  return device;
}

// A unit's input or output with its tensors on `device` (of an AnyValue, the tensor it holds);
// anything else as it is.
template <class T>
decltype(auto) on_device(c10::Device device, T&& value) {
  using Value = std::decay_t<T>;
  const auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  if constexpr (std::is_same_v<Value, torch::nn::AnyValue>) {
    const auto* tensor = value.template try_get<at::Tensor>();
    return tensor ? torch::nn::AnyValue(move(*tensor)) : torch::nn::AnyValue(std::forward<T>(value));
  } else if constexpr (is_tensor_tree_v<Value>) {
    return map_tensors(static_cast<const Value&>(value), move);
  } else {
    return std::forward<T>(value);
  }
}

// One child of a Sequential called as a unit with its hooks, recomputed if checkpointed.
template <class... Args>
torch::nn::AnyValue hooked_call(torch::nn::AnyModule& child, const UnitCall& call, Args&&... args) {
  torch::nn::AnyValue output = [&] {
    if (!call.recompute) return child.any_forward(std::forward<Args>(args)...);
    const at::Tensor* input = nullptr;
    if constexpr (sizeof...(Args) == 1) {
      auto& arg = (args, ...);
      if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, torch::nn::AnyValue>)
        input = arg.template try_get<at::Tensor>();
      else if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, at::Tensor>)
        input = &arg;
    }
    if (!input) cannot_recompute(*child.ptr(), "its input is not one tensor");
    torch::nn::AnyModule module = child;  // shares the module
    return torch::nn::AnyValue(acc::checkpoint(
        [module](const at::Tensor& x) mutable {
          auto value = module.any_forward(x);
          const auto* tensor = value.template try_get<at::Tensor>();
          if (!tensor) cannot_recompute(*module.ptr(), "its output is not one tensor");
          return *tensor;
        },
        *input));
  }();
  if (call.hooks) {
    const auto* tensor = output.template try_get<at::Tensor>();
    call.hooks->after_forward(tensor ? std::vector<at::Tensor>{*tensor} : std::vector<at::Tensor>{});
  }
  return output;
}

// One child of a Sequential called as a unit: FSDP's or dispatch_model's hooks around it (the
// latter moving its inputs to its device and its output back), recomputed if checkpointed.
template <class... Args>
torch::nn::AnyValue call_unit(torch::nn::AnyModule& child, Args&&... args) {
  const auto call = UnitRegistry::instance().call(*child.ptr());
  if (!call.hooks && !call.recompute) return child.any_forward(std::forward<Args>(args)...);
  if (call.hooks) call.hooks->before_forward();
  const auto device = call.hooks ? call.hooks->input_device() : std::nullopt;
  if (!device) return hooked_call(child, call, std::forward<Args>(args)...);
  const auto origin = first_tensor_device(args...);
  auto output = hooked_call(child, call, on_device(*device, std::forward<Args>(args))...);
  return origin ? on_device(*origin, std::move(output)) : std::move(output);
}

// A Sequential model's forward with its children called one by one as units.
template <class Holder, class... Args>
at::Tensor forward_sequential(Holder& module, Args&&... args) {
  auto& children = *module;
  auto it = children.begin();
  if (it == children.end()) return module->forward(std::forward<Args>(args)...);
  auto value = call_unit(*it, std::forward<Args>(args)...);
  for (++it; it != children.end(); ++it) value = call_unit(*it, std::move(value));
  return value.template get<at::Tensor>();
}

}  // namespace detail

template <class Holder>
class Unit : public Holder {
 public:
  using Impl = typename Holder::ContainedType;

  Unit(std::nullptr_t) : Holder(nullptr) {}
  Unit(Holder holder) : Holder(std::move(holder)) { detail::UnitRegistry::instance().declare(this->ptr()); }
  Unit(std::shared_ptr<Impl> module) : Unit(Holder(std::move(module))) {}

  template <class... Args>
  auto operator()(Args&&... args) {
    const auto call = detail::UnitRegistry::instance().call(*this->get());
    if (!call.hooks && !call.recompute) return Holder::operator()(std::forward<Args>(args)...);
    if (call.hooks) call.hooks->before_forward();
    const auto device = call.hooks ? call.hooks->input_device() : std::nullopt;
    if (!device) return hooked_forward(call, std::forward<Args>(args)...);
    const auto origin = detail::first_tensor_device(args...);
    auto output = hooked_forward(call, detail::on_device(*device, std::forward<Args>(args))...);
    if constexpr (detail::is_tensor_tree_v<decltype(output)>)
      if (origin) output = detail::on_device(*origin, output);
    return output;
  }

 private:
  template <class... Args>
  auto hooked_forward(const detail::UnitCall& call, Args&&... args) {
    auto output =
        call.recompute ? recomputed(std::forward<Args>(args)...) : Holder::operator()(std::forward<Args>(args)...);
    if (call.hooks) detail::after_unit_forward(*call.hooks, output);
    return output;
  }

  template <class... Args>
  auto recomputed(Args&&... args) {
    using Output = decltype(std::declval<Holder&>()(std::forward<Args>(args)...));
    if constexpr (detail::is_tensor_tree_v<Output>) {
      Holder holder = *this;  // shares the module
      return Output(acc::checkpoint(
          [holder](const std::decay_t<Args>&... inputs) mutable { return Output(holder(inputs...)); }, args...));
    } else {
      detail::cannot_recompute(*this->get(), "its forward returns something other than tensors");
      return Holder::operator()(std::forward<Args>(args)...);
    }
  }
};

namespace detail {
// checkpoint_units below, for a module whose holder's type is gone.
inline std::size_t checkpoint_units(const torch::nn::Module& model, bool enabled) {
  auto& registry = UnitRegistry::instance();
  const bool sequential = is_sequential(model);
  std::size_t units = 0;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const bool child_of_sequential = sequential && item.key().find('.') == std::string::npos;
    if (!child_of_sequential && !registry.is_declared(*item.value())) continue;
    registry.recompute(item.value(), enabled);
    ++units;
  }
  return units;
}
}  // namespace detail

// Activation checkpointing for a model's units: every module in it declared with acc::Unit and,
// when the model is a torch::nn::Sequential, its children keep no activations in forward and
// recompute them in backward (acc::checkpoint). enabled == false turns it off. Returns how many
// units there are. The Accelerator calls it at prepare when AcceleratorOptions::
// activation_checkpointing (the config's fsdp_activation_checkpointing) is set.
template <class Holder>
std::size_t checkpoint_units(const Holder& model, bool enabled = true) {
  return detail::checkpoint_units(*model, enabled);
}

}  // namespace acc
