// A prepared model: called like the module it holds (`model(x)`), runs the forward pass under the
// accelerator's precision policy, and unwrap()s to the original holder.
#pragma once

#include <acc/detail/tensor_tree.hpp>
#include <acc/strategy/strategy.hpp>

#include <c10/core/ScalarType.h>

#include <type_traits>
#include <utility>

namespace acc {

template <class Holder, class Owner>
class PreparedModel {
 public:
  PreparedModel(Holder module, Owner& owner) : module_(std::move(module)), owner_(&owner) {}

  template <class... Args>
  auto operator()(Args&&... args) {
    auto precision_scope = owner_->autocast();
    if constexpr (shards_model_v<typename Owner::strategy_type>)  // FSDP gathers around the calls
      return to_full_precision(owner_->strategy().forward(module_, in_compute_dtype(std::forward<Args>(args))...));
    else
      return to_full_precision(module_->forward(in_compute_dtype(std::forward<Args>(args))...));
  }

  // The holder's constness is the pointer's, not the module's, as with ModuleHolder itself.
  auto* operator->() const { return module_.ptr().get(); }
  auto& operator*() const { return *module_.ptr(); }
  const Holder& unwrap() const { return module_; }

 private:
  using Precision = typename Owner::precision_type;

  // True half precision: floating inputs in the parameters' dtype; other arguments as they are.
  template <class Arg>
  static decltype(auto) in_compute_dtype(Arg&& arg) {
    if constexpr (Precision::casts_parameters && std::is_same_v<std::decay_t<Arg>, at::Tensor>)
      return arg.is_floating_point() ? arg.to(Precision::dtype) : at::Tensor(arg);
    else
      return std::forward<Arg>(arg);
  }

  // Half-precision outputs: losses and metrics computed from them outside the model are more
  // accurate in fp32 (Python Accelerate converts them the same way).
  template <class Output>
  static Output to_full_precision(Output output) {
    if constexpr ((Precision::autocast || Precision::casts_parameters) && detail::is_tensor_tree_v<Output>)
      return detail::map_tensors(output, [](const at::Tensor& t) {
        const bool reduced = t.defined() && (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16);
        return reduced ? t.to(at::kFloat) : t;
      });
    else
      return output;
  }

  Holder module_;
  Owner* owner_;
};

}  // namespace acc
