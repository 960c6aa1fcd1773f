// FP32: full precision. No autocast, no loss scaling; the model and its inputs and outputs are
// left as they are.
#pragma once

#include <acc/precision/autocast.hpp>
#include <acc/precision/no_loss_scaling.hpp>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <optional>
#include <string_view>
#include <utility>

namespace acc {

struct FP32 {
  static constexpr std::string_view name = "no";
  using loss_scaler = NoLossScaling;
  using forward_scope = NoAutocast;
  static constexpr std::optional<c10::ScalarType> compute_dtype = std::nullopt;
  static void check_device(c10::Device) {}
  static void prepare_module(torch::nn::Module&) {}
  template <class Arg>
  static Arg&& input(Arg&& arg) {
    return std::forward<Arg>(arg);
  }
  template <class Output>
  static Output output(Output output) {
    return output;
  }
};

}  // namespace acc
