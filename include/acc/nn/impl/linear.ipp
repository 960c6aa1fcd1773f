// Bodies of include/acc/nn/linear.hpp.
#pragma once

#include <acc/nn/linear.hpp>

#include <ATen/ops/linear.h>
#include <torch/nn/init.h>

#include <cmath>
#include <tuple>

namespace acc::nn {

ACC_DECL LinearImpl::LinearImpl(const torch::nn::LinearOptions& options_) : options(options_) { reset(); }

ACC_DECL void LinearImpl::reset() {
  weight = register_parameter("weight", at::empty({options.out_features(), options.in_features()}));
  if (options.bias())
    bias = register_parameter("bias", at::empty({options.out_features()}));
  else
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  reset_parameters();
}

// The order and bounds of torch::nn::Linear's reset_parameters, so that the same random state
// gives the same weights.
ACC_DECL void LinearImpl::reset_parameters() {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const auto fan_in = std::get<0>(torch::nn::init::_calculate_fan_in_and_fan_out(weight));
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

ACC_DECL void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "acc::nn::Linear(in_features=" << options.in_features() << ", out_features=" << options.out_features()
         << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

ACC_DECL at::Tensor LinearImpl::forward(const at::Tensor& input) {
  return split_ ? split_->forward(*this, input) : local_forward(input, bias);
}

ACC_DECL at::Tensor LinearImpl::local_forward(const at::Tensor& input, const at::Tensor& bias_) {
  return matmul_ ? (*matmul_)(input, weight, bias_) : at::linear(input, weight, bias_);
}

}  // namespace acc::nn
