// The fp8 matmul acc::FP8 installs in an acc::nn::Linear: input and weight cast to fp8 with their
// scales (the fused kernels of kernels.hpp), at::_scaled_mm forward, and a backward that casts the
// output's gradient and runs _scaled_mm for the input's and the weight's gradients, each with the
// operand layouts _scaled_mm requires (the transposed copies come from the same passes as the
// plain ones). Master weights and their gradients keep their dtype (fp32, or bf16 where a sharding
// strategy gathers in bf16); the output is bf16, as under bf16 autocast.
// Available where ACC_HAS_FP8 is 1 (a CUDA build of libtorch >= 2.1 with acc::fp8 linked).
#pragma once

#include <acc/detail/build_config.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/fp8/recipe.hpp>
#include <acc/nn/linear.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>

#include <string>

namespace acc::fp8 {

// Why fp8 cannot run on `device` with this build, or "" where it can.
ACC_DECL std::string unsupported_reason(c10::Device device);

// The scales of one operand under delayed scaling, on the device: the scale the next cast uses,
// the amax of the cast running now, and the history of amaxes (newest first).
struct DelayedScale {
  at::Tensor scale, amax_now, history;
  bool started = false;  // the first cast scales from its own amax and starts the history
};

// One layer's fp8 state; held by the layer and by the autograd nodes of its calls.
struct LayerState : torch::CustomClassHolder {  // what an autograd node can keep
  explicit LayerState(FP8Recipe recipe_) : recipe(std::move(recipe_)) {}
  FP8Recipe recipe;
  DelayedScale input, weight, grad_output;
  bool grad_enabled = true;  // grad mode where the running call was made
};

class ScaledLinear : public nn::LinearMatmul {
 public:
  explicit ScaledLinear(FP8Recipe recipe);
  // In fp8 where _scaled_mm can take the shapes (every dimension, the rows of a batch included, a
  // multiple of 16) and the tensors are on CUDA; otherwise at::linear, as under bf16 autocast.
  at::Tensor operator()(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias) override;
  const LayerState& state() const { return *state_; }

 private:
  c10::intrusive_ptr<LayerState> state_;
};

}  // namespace acc::fp8

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/fp8/impl/scaled_linear.ipp>
#endif
