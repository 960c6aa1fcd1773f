// What the autocast precisions (BF16, FP16) share: fp32 master weights, the forward under
// autocast to Dtype, its half outputs returned in fp32, and a sharding strategy gathering
// parameters in Dtype. No loss scaling unless the policy names a scaler. `Policy` is the policy
// itself, for its name in messages.
#pragma once

#include <acc/detail/torch_compat.hpp>
#include <acc/error.hpp>
#include <acc/precision/autocast.hpp>
#include <acc/precision/float_outputs.hpp>
#include <acc/precision/no_loss_scaling.hpp>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <optional>
#include <string>
#include <utility>

namespace acc {

template <class Policy, c10::ScalarType Dtype>
struct MixedPrecision {
  using loss_scaler = NoLossScaling;
  using forward_scope = AutocastTo<Dtype>;
  static constexpr std::optional<c10::ScalarType> compute_dtype = Dtype;

  static void check_device(c10::Device device) {
    if (compat::autocast_supported(device.type(), Dtype)) return;
    // Named as the flag and the config spell it: most users chose it there, not as a C++ type.
    std::string supported = "no";
    if (compat::autocast_supported(device.type(), at::kHalf)) supported += ", fp16";
    supported += compat::autocast_supported(device.type(), at::kBFloat16) ? " or bf16" : "";
    throw Error("--mixed_precision " + std::string(Policy::name) + " (mixed_precision: " + std::string(Policy::name) +
                ") has no autocast on " + device.str() + " in this libtorch; on " + device.str() +
                " use --mixed_precision " + supported + " (a program that names its policies: acc::FP32 or acc::BF16)");
  }

  // Mixed precision keeps fp32 master weights: half parameters would have half gradients, which
  // autocast does not expect and which loss scaling would overflow.
  static void prepare_module(torch::nn::Module& module) {
    for (const auto& p : module.named_parameters())
      if (p.value().scalar_type() == at::kHalf || p.value().scalar_type() == at::kBFloat16)
        throw Error("parameter '" + p.key() + "' is " + c10::toString(p.value().scalar_type()) +
                    " but mixed precision '" + std::string(Policy::name) +
                    "' expects fp32 parameters (it keeps fp32 master weights and computes in half under "
                    "autocast); keep the model in fp32, or use acc::FP16True / acc::BF16True for half parameters");
  }

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
