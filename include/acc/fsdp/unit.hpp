// acc::Unit<Holder>: declares a submodule an FSDP unit. It is the module holder it wraps (register
// it, call it, `->` into it) and, under the FSDP strategy, gathers the unit's parameters before
// its forward and frees them after (libtorch's C++ modules have no forward hooks, so the call
// must pass through here). Under other strategies a call costs one atomic load.
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
#pragma once

#include <acc/detail/tensor_tree.hpp>
#include <acc/fsdp/unit_registry.hpp>

#include <torch/nn/pimpl.h>

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace acc {

template <class Holder>
class Unit : public Holder {
 public:
  using Impl = typename Holder::ContainedType;

  Unit(std::nullptr_t) : Holder(nullptr) {}
  Unit(Holder holder) : Holder(std::move(holder)) { detail::UnitRegistry::instance().declare(this->ptr()); }
  Unit(std::shared_ptr<Impl> module) : Unit(Holder(std::move(module))) {}

  template <class... Args>
  auto operator()(Args&&... args) {
    auto* hooks = detail::UnitRegistry::instance().hooks(*this->get());
    if (!hooks) return Holder::operator()(std::forward<Args>(args)...);
    hooks->before_forward();
    auto output = Holder::operator()(std::forward<Args>(args)...);
    std::vector<at::Tensor> tensors;
    if constexpr (detail::is_tensor_tree_v<decltype(output)>)
      detail::map_tensors(output, [&](const at::Tensor& t) {
        tensors.push_back(t);
        return t;
      });
    hooks->after_forward(tensors);
    return output;
  }
};

}  // namespace acc
