// What the autocast precisions (BF16, FP16) share: fp32 master weights, the forward under
// autocast to Dtype, its half outputs returned in fp32, and a sharding strategy gathering
// parameters in Dtype. No loss scaling unless the policy names a scaler. `Policy` is the policy
// itself, for its name in messages.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/precision/autocast.hpp>
#include <acc/precision/float_outputs.hpp>
#include <acc/precision/no_loss_scaling.hpp>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <optional>
#include <string_view>
#include <utility>

namespace acc {
namespace detail {
// MixedPrecision's checks, compiled once for every policy: an acc::Error, naming the precision
// `name`, if `device` has no autocast to `dtype` in this libtorch, or if `module` has half parameters.
ACC_DECL void check_autocast_device(std::string_view name, c10::ScalarType dtype, c10::Device device);
ACC_DECL void refuse_half_parameters(std::string_view name, const torch::nn::Module& module);
}  // namespace detail

template <class Policy, c10::ScalarType Dtype>
struct MixedPrecision {
  using loss_scaler = NoLossScaling;
  using forward_scope = AutocastTo<Dtype>;
  static constexpr std::optional<c10::ScalarType> compute_dtype = Dtype;

  static void check_device(c10::Device device) { detail::check_autocast_device(Policy::name, Dtype, device); }

  // Mixed precision keeps fp32 master weights: half parameters would have half gradients, which
  // autocast does not expect and which loss scaling would overflow.
  static void prepare_module(torch::nn::Module& module) { detail::refuse_half_parameters(Policy::name, module); }

  template <class Arg>
  static Arg&& input(Arg&& arg) {
    return std::forward<Arg>(arg);
  }
  template <class Output>
  static Output output(Output output) {
    return detail::float_outputs(std::move(output));
  }
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/precision/impl/mixed.ipp>
#endif
