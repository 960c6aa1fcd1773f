// Applies a function to every tensor in a nested value: a tensor, a torch::data::Example, or
// std::vector / std::pair / std::tuple / std::map<std::string, ...> of those. Device moves and
// collectives share this walk.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/data/example.h>

#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc::detail {

template <class T>
struct is_tensor_tree : std::false_type {};
template <>
struct is_tensor_tree<at::Tensor> : std::true_type {};
template <class D, class T>
struct is_tensor_tree<torch::data::Example<D, T>> : std::conjunction<is_tensor_tree<D>, is_tensor_tree<T>> {};
template <class D>
struct is_tensor_tree<torch::data::Example<D, torch::data::example::NoTarget>> : is_tensor_tree<D> {};
template <class T>
struct is_tensor_tree<std::vector<T>> : is_tensor_tree<T> {};
template <class A, class B>
struct is_tensor_tree<std::pair<A, B>> : std::conjunction<is_tensor_tree<A>, is_tensor_tree<B>> {};
template <class... Ts>
struct is_tensor_tree<std::tuple<Ts...>> : std::conjunction<is_tensor_tree<Ts>...> {};
template <class T>
struct is_tensor_tree<std::map<std::string, T>> : is_tensor_tree<T> {};

template <class T>
inline constexpr bool is_tensor_tree_v = is_tensor_tree<std::decay_t<T>>::value;

template <class T>
struct is_example : std::false_type {};
template <class D, class T>
struct is_example<torch::data::Example<D, T>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
template <class T>
struct is_string_map : std::false_type {};
template <class T>
struct is_string_map<std::map<std::string, T>> : std::true_type {};
template <class T>
struct is_tuple_like : std::false_type {};
template <class A, class B>
struct is_tuple_like<std::pair<A, B>> : std::true_type {};
template <class... Ts>
struct is_tuple_like<std::tuple<Ts...>> : std::true_type {};

// Returns a value of the same shape with every tensor replaced by fn(tensor).
template <class T, class Fn>
T map_tensors(const T& value, Fn&& fn) {
  static_assert(is_tensor_tree_v<T>,
                "acc: this value holds something other than tensors; supported are at::Tensor, "
                "torch::data::Example, std::vector, std::pair, std::tuple and std::map<std::string, ...> of them");
  if constexpr (std::is_same_v<T, at::Tensor>) {
    return fn(value);
  } else if constexpr (is_example<T>::value) {
    if constexpr (std::is_same_v<typename T::TargetType, torch::data::example::NoTarget>) {
      return T(map_tensors(value.data, fn));
    } else {
      auto data = map_tensors(value.data, fn);  // before the target: fn sees the tensors in order
      return T(std::move(data), map_tensors(value.target, fn));
    }
  } else if constexpr (is_vector<T>::value) {
    T out;
    out.reserve(value.size());
    for (const auto& item : value) out.push_back(map_tensors(item, fn));
    return out;
  } else if constexpr (is_string_map<T>::value) {
    T out;
    for (const auto& [key, item] : value) out.emplace(key, map_tensors(item, fn));
    return out;
  } else {  // pair or tuple; a braced list evaluates left to right
    return std::apply([&](const auto&... items) { return T{map_tensors(items, fn)...}; }, value);
  }
}

// Calls fn(tensor) for every tensor, in order (an Example's data before its target, a tuple's
// elements first to last): the same order on every rank.
template <class T, class Fn>
void for_each_tensor(const T& value, Fn&& fn) {
  map_tensors(value, [&](const at::Tensor& t) {
    fn(t);
    return t;
  });
}

}  // namespace acc::detail
