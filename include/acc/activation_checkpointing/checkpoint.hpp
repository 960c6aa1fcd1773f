// acc::checkpoint(fn, inputs...): activation checkpointing. The forward of fn runs without keeping
// its intermediate activations; only the inputs are kept, and during backward fn runs again to
// rebuild them, with the random generators and the autocast state its first run saw (dropout draws
// the same mask, mixed precision computes in the same dtypes). Memory then grows with the number
// of checkpointed segments, not with every activation inside them, for about one more forward.
//
//   #include <acc/activation_checkpointing/checkpoint.hpp>
//   at::Tensor y = acc::checkpoint([&](const at::Tensor& x) { return block->forward(x); }, x);
//
// `inputs` are tensors, containers of them (std::vector, std::pair, std::tuple,
// std::map<std::string, ...>, torch::data::Example) or other values, which are copied and passed
// again as they are. fn returns a tensor or such a container. Gradients reach every input that
// requires one and every parameter fn uses, also when no input requires a gradient (the inputs of
// a first block rarely do), as PyTorch's non-reentrant checkpoint does. Parameter gradients are
// accumulated into their .grad as loss.backward() does; torch::autograd::grad and double backward
// through a checkpoint are not supported. Without grad mode (evaluation) fn simply runs.
// FSDP, DDP and Single apply it to every declared unit (acc::Unit) of a prepared model when
// AcceleratorOptions::activation_checkpointing or the config's fsdp_activation_checkpointing says
// so (see include/acc/fsdp/unit.hpp).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/detail/tensor_tree.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {
namespace detail {

// A forward over the flat list of the tensors of its inputs, returning the flat list of those of
// its outputs: the shape acc::checkpoint reduces any fn to.
using FlatForward = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// Runs forward(inputs) keeping only the inputs; its outputs recompute it in backward.
ACC_DECL std::vector<at::Tensor> run_checkpointed(FlatForward forward, std::vector<at::Tensor> inputs);

template <class T>
void append_tensors(const T& value, std::vector<at::Tensor>& flat) {
  if constexpr (is_tensor_tree_v<T>) for_each_tensor(value, [&](const at::Tensor& t) { flat.push_back(t); });
}
// `value` with its tensors dropped: its shape (and every value that is not a tensor) alone.
template <class T>
T without_tensors(const T& value) {
  if constexpr (is_tensor_tree_v<T>)
    return map_tensors(value, [](const at::Tensor&) { return at::Tensor(); });
  else
    return value;
}
// `shape` with its tensors taken from flat, in order, from flat[next] on.
template <class T>
T with_tensors(const T& shape, const std::vector<at::Tensor>& flat, std::size_t& next) {
  if constexpr (is_tensor_tree_v<T>)
    return map_tensors(shape, [&](const at::Tensor&) { return flat.at(next++); });
  else
    return shape;
}

}  // namespace detail

template <class Fn, class... Inputs>
auto checkpoint(Fn fn, const Inputs&... inputs) {
  using Output = std::decay_t<std::invoke_result_t<Fn&, const Inputs&...>>;
  static constexpr bool returns_tensors = detail::is_tensor_tree_v<Output>;
  static_assert(returns_tensors,
                "acc::checkpoint: fn must return at::Tensor or a std::vector, std::pair, std::tuple or "
                "std::map<std::string, ...> of tensors (what backward can reach); return the tensors and keep "
                "other results outside the checkpoint");
  if (!at::GradMode::is_enabled()) return Output(fn(inputs...));
  std::vector<at::Tensor> flat;
  (detail::append_tensors(inputs, flat), ...);
  // The recompute keeps the inputs' shapes and non-tensor values, not their tensors: the tensors
  // are kept once, by the autograd node, and passed back in.
  auto shapes = std::make_shared<std::tuple<Inputs...>>(detail::without_tensors(inputs)...);
  auto output_shape = std::make_shared<std::optional<Output>>();
  detail::FlatForward forward = [fn = std::move(fn), shapes,
                                 output_shape](const std::vector<at::Tensor>& tensors) mutable {
    std::size_t next = 0;
    auto rebuilt = std::apply(
        [&](const auto&... shape) { return std::tuple<Inputs...>{detail::with_tensors(shape, tensors, next)...}; },
        *shapes);
    Output output = std::apply(fn, std::as_const(rebuilt));
    std::vector<at::Tensor> flat_output;
    detail::append_tensors(output, flat_output);
    if (!*output_shape) *output_shape = detail::without_tensors(output);
    return flat_output;
  };
  const auto outputs = detail::run_checkpointed(std::move(forward), std::move(flat));
  std::size_t next = 0;
  return detail::with_tensors(**output_shape, outputs, next);
}

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/activation_checkpointing/impl/checkpoint.ipp>
#endif
