// What a communication policy provides, and the check that says so when a type does not.
//
// A Comm is a concrete type (callers are templated on it: no virtual call on the hot path):
//   static constexpr std::string_view name;      // "gloo", "nccl", "local"
//   static constexpr bool available;             // built into this binary
//   static constexpr c10::DeviceType device_type;  // where its tensors live (the strategies' YAML
//                                                 // spelling and matching follow from it)
//   int rank() const; int world_size() const;
//   c10::Device device() const;                  // where its tensors must live
//   void all_reduce(at::Tensor&, ReduceOp);      // in place
//   Pending all_reduce_async(at::Tensor&, ReduceOp);  // starts it; Pending::wait() makes the
//                                                 // result visible to the caller's stream/thread
//   void broadcast(at::Tensor&, int root);       // in place
//   std::vector<at::Tensor> all_gather(const at::Tensor&);  // same shape on every rank
//   void all_gather_into(at::Tensor& out, const at::Tensor& in);  // out: world x in, side by side
//   void reduce_scatter(at::Tensor& out, at::Tensor& in, ReduceOp);  // in: world x out; in is
//                                                 // scratch afterwards
//   (and _async variants of both, returning Pending)
//   void barrier();
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string_view>
#include <type_traits>
#include <vector>

namespace acc {

enum class ReduceOp { sum, mean, max, min };

namespace detail {
template <class C, class = void>
struct is_comm_policy : std::false_type {};
template <class C>
struct is_comm_policy<C, std::void_t<decltype(std::string_view{C::name}), decltype(bool{C::available})>>
    : std::true_type {};
}  // namespace detail

template <class C>
inline constexpr bool is_comm_policy_v = detail::is_comm_policy<C>::value;

}  // namespace acc
