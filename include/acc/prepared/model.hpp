// A prepared model: called like the module it holds (`model(x)`), runs the forward pass as the
// accelerator's strategy calls it (FSDP gathers units around their calls) in its precision's scope,
// and unwrap()s to the original holder.
#pragma once

#include <utility>

namespace acc {

template <class Holder, class Owner>
class PreparedModel {
 public:
  PreparedModel(Holder module, Owner& owner) : module_(std::move(module)), owner_(&owner) {}

  template <class... Args>
  auto operator()(Args&&... args) {
    [[maybe_unused]] auto precision_scope = owner_->autocast();
    return Precision::output(owner_->strategy().forward(module_, Precision::input(std::forward<Args>(args))...));
  }

  // The holder's constness is the pointer's, not the module's, as with ModuleHolder itself.
  auto* operator->() const { return module_.ptr().get(); }
  auto& operator*() const { return *module_.ptr(); }
  const Holder& unwrap() const { return module_; }

 private:
  using Precision = typename Owner::precision_type;

  Holder module_;
  Owner* owner_;
};

}  // namespace acc
