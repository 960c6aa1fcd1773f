// acc::init_empty_weights(): a scope in which modules are built on the meta device, taking no
// memory (Python Accelerate's `with init_empty_weights():`), so that a model larger than host
// memory can be described before its weights are loaded tensor by tensor
// (acc::load_checkpoint_in_model), given storage (acc::materialize), or received from rank 0 under
// FSDP with cpu_ram_efficient_loading.
//
//   Net net{nullptr};
//   {
//     const auto empty = acc::init_empty_weights();
//     net = Net();  // every parameter and buffer is a meta tensor: shapes and dtypes, no storage
//   }
//
// (Except a 0-dim tensor made from a C++ scalar on the CPU, such as BatchNorm's
// num_batches_tracked: libtorch makes those without dispatching, so they stay real, 8 bytes each.)
//
// How: libtorch has no default device, but every operation is dispatched on the thread's local
// dispatch key set. The scope adds the Meta backend to its included keys, which outranks CPU and
// CUDA, and excludes BackendSelect, which would otherwise send a factory function (at::empty,
// at::zeros, ...) to the backend its TensorOptions name. So inside the scope every tensor
// operation runs its meta kernel: factories make meta tensors, and initialisers (uniform_,
// normal_, fill_) only check shapes. Two consequences: the scope is for building modules only (an
// operation on an existing real tensor inside it computes nothing either: build such a tensor
// outside), and buffers are meta too, as with Accelerate's default include_buffers=True (C++
// modules register buffers and parameters through non-virtual calls, so there is no point where
// only parameters could be caught, and Accelerate's include_buffers=False has no C++ twin here).
// The calls used (the local dispatch key set, ForceDispatchKeyGuard) are the same in libtorch 1.13
// (built and run here) and 2.x (read in its c10/core/impl/LocalDispatchKeySet.h).
#pragma once

#include <c10/core/DispatchKey.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace acc {

// Returned by init_empty_weights(); ends the scope when it goes, putting back the thread's dispatch
// keys exactly as it found them (also when scopes nest, or an exception unwinds it). Exactly: the
// whole set is saved and restored, since taking Meta out again with DispatchKeySet's subtraction
// (as IncludeDispatchKeyGuard does) leaves its backend bit behind, and every later operation would
// still run on Meta.
class [[nodiscard]] EmptyWeightsScope {
 public:
  EmptyWeightsScope() : restore_(with_meta(c10::impl::tls_local_dispatch_key_set())) {}
  EmptyWeightsScope(const EmptyWeightsScope&) = delete;
  EmptyWeightsScope& operator=(const EmptyWeightsScope&) = delete;

 private:
  static c10::impl::LocalDispatchKeySet with_meta(c10::impl::LocalDispatchKeySet keys) {
    keys.included_ = keys.included_ | c10::DispatchKeySet(c10::DispatchKey::Meta);
    keys.excluded_ = keys.excluded_ | c10::DispatchKeySet(c10::DispatchKey::BackendSelect);
    return keys;
  }
  c10::impl::ForceDispatchKeyGuard restore_;  // sets its argument, restores what was there before
};

// The scope starts here (on this thread) and ends with the returned object: keep it in a variable
// (a discarded one would end the scope at once, and the compiler warns).
[[nodiscard]] inline EmptyWeightsScope init_empty_weights() { return {}; }

}  // namespace acc
