// True half precision (Lightning Fabric's "bf16-true" / "16-true"): parameters, gradients,
// optimizer state and compute all in the half type, for memory; floating inputs are cast to it
// and half outputs come back in fp32. No autocast and no loss scaling.
#pragma once

#include <acc/precision/autocast.hpp>
#include <acc/precision/float_outputs.hpp>
#include <acc/precision/no_loss_scaling.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

namespace acc {

template <c10::ScalarType Dtype>
struct TrueHalf {
  using loss_scaler = NoLossScaling;
  using forward_scope = NoAutocast;
  static constexpr std::optional<c10::ScalarType> compute_dtype = std::nullopt;  // the parameters are in Dtype
  static void check_device(c10::Device) {}
  // Before a strategy buckets or shards the parameters, so that those hold Dtype too.
  static void prepare_module(torch::nn::Module& module) { module.to(Dtype); }
  // Floating tensors in Dtype; other arguments as they are.
  template <class Arg>
  static decltype(auto) input(Arg&& arg) {
    if constexpr (std::is_same_v<std::decay_t<Arg>, at::Tensor>)
      return arg.is_floating_point() ? arg.to(Dtype) : at::Tensor(arg);
    else
      return std::forward<Arg>(arg);
  }
  template <class Output>
  static Output output(Output output) {
    return detail::float_outputs(std::move(output));
  }
};

struct BF16True : TrueHalf<c10::ScalarType::BFloat16> {
  static constexpr std::string_view name = "bf16-true";
};

struct FP16True : TrueHalf<c10::ScalarType::Half> {
  static constexpr std::string_view name = "fp16-true";
};

}  // namespace acc
