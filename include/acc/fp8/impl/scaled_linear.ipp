// Bodies of include/acc/fp8/scaled_linear.hpp.
#pragma once

#include <acc/fp8/scaled_linear.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/linear.h>

#if ACC_HAS_FP8
#include <acc/fp8/kernels.hpp>

#include <ATen/ops/_scaled_mm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/autograd/custom_function.h>
#endif

#include <cstdint>
#include <vector>

namespace acc::fp8 {

#if ACC_HAS_FP8
namespace detail {

constexpr float max_of(kernels::Format format) { return format == kernels::Format::e4m3 ? 448.f : 57344.f; }

// A tensor cast to fp8: the plain copy and/or the transposed one, and 1 / scale for _scaled_mm.
struct Operand {
  at::Tensor data, transposed, inv_scale;
};

inline Operand cast(const at::Tensor& matrix, kernels::Format format, bool plain, bool transposed,
                    DelayedScale* delayed, const FP8Recipe& recipe) {
  at::Tensor input = matrix.scalar_type() == at::kBFloat16 ? matrix : matrix.to(at::kFloat);
  input = input.contiguous();
  if (reinterpret_cast<std::uintptr_t>(input.data_ptr()) % 16 != 0) input = input.clone();  // a view off 16 bytes
  const auto rows = input.size(0), cols = input.size(1);
  const auto fp8 = format == kernels::Format::e4m3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
  const auto stream = c10::cuda::getCurrentCUDAStream(input.device().index()).stream();
  Operand result;
  result.inv_scale = at::empty({}, input.options().dtype(at::kFloat));
  if (plain) result.data = at::empty({rows, cols}, input.options().dtype(fp8));
  if (transposed) result.transposed = at::empty({cols, rows}, input.options().dtype(fp8));

  kernels::CastArguments args;
  args.input = input.data_ptr();
  args.type = input.scalar_type() == at::kBFloat16 ? kernels::Input::bfloat16 : kernels::Input::float32;
  args.rows = rows, args.cols = cols;
  args.fp8_max = max_of(format);
  args.format = format;
  args.out = plain ? result.data.data_ptr() : nullptr;
  args.out_transposed = transposed ? result.transposed.data_ptr() : nullptr;
  args.inv_scale = result.inv_scale.data_ptr<float>();

  const bool from_amax = delayed == nullptr || !delayed->started;
  at::Tensor amax;
  if (from_amax) {
    amax = delayed ? delayed->amax_now : at::empty({1}, input.options().dtype(at::kFloat));
    kernels::amax(args.input, args.type, input.numel(), amax.data_ptr<float>(), stream);
    args.scale_source = amax.data_ptr<float>();
    args.from_amax = true;
  } else {
    args.scale_source = delayed->scale.data_ptr<float>();
    args.amax = delayed->amax_now.data_ptr<float>();
  }
  kernels::cast(args, stream);
  if (delayed) {
    kernels::update_history(delayed->history.data_ptr<float>(), static_cast<int>(delayed->history.numel()),
                            delayed->amax_now.data_ptr<float>(), delayed->scale.data_ptr<float>(),
                            recipe.amax_compute_algorithm() == FP8Recipe::AmaxAlgorithm::max, args.fp8_max,
                            static_cast<int>(recipe.margin()), stream);
    delayed->started = true;
  }
  return result;
}

inline DelayedScale* delayed_or_null(DelayedScale& scale, const FP8Recipe& recipe, const at::Tensor& like) {
  if (recipe.scaling() != FP8Recipe::Scaling::delayed) return nullptr;
  if (!scale.history.defined()) {
    const auto options = like.options().dtype(at::kFloat);
    scale.scale = at::ones({1}, options);
    scale.amax_now = at::zeros({1}, options);
    scale.history = at::zeros({recipe.amax_history_len()}, options);
  }
  return &scale;
}

inline kernels::Format gradient_format(const FP8Recipe& recipe) {
  return recipe.format() == FP8Recipe::Format::hybrid ? kernels::Format::e5m2 : kernels::Format::e4m3;
}

class ScaledLinearFunction : public torch::autograd::Function<ScaledLinearFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                c10::intrusive_ptr<LayerState> state, const at::Tensor& input,
                                                const at::Tensor& weight, const at::Tensor& bias) {
    const auto& recipe = state->recipe;
    const auto in_features = weight.size(1), out_features = weight.size(0);
    // Inside a Function's forward grad mode is off; whether backward will run is what apply saw.
    const bool grad_of_weight = state->grad_enabled && weight.requires_grad();
    const bool grad_of_input = state->grad_enabled && input.requires_grad();
    const auto x = cast(input.reshape({-1, in_features}), kernels::Format::e4m3, true, grad_of_weight,
                        delayed_or_null(state->input, recipe, input), recipe);
    const auto w = cast(weight, kernels::Format::e4m3, true, grad_of_input,
                        delayed_or_null(state->weight, recipe, weight), recipe);
    // Forward with fast accumulation, as torchao's recipes do; the gradients accumulate exactly.
    auto output = at::_scaled_mm(x.data, w.data.t(), x.inv_scale, w.inv_scale,
                                 bias.defined() ? std::optional<at::Tensor>(bias.to(at::kBFloat16)) : std::nullopt,
                                 std::nullopt, at::kBFloat16, /*use_fast_accum=*/true);
    ctx->save_for_backward({x.transposed, w.transposed, x.inv_scale, w.inv_scale});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    ctx->saved_data["input_sizes"] = input.sizes().vec();
    ctx->saved_data["input_dtype"] = input.scalar_type();
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    ctx->saved_data["grad_of_input"] = grad_of_input;
    ctx->saved_data["grad_of_weight"] = grad_of_weight;
    ctx->saved_data["bias_dtype"] = bias.defined() ? bias.scalar_type() : at::kFloat;
    ctx->saved_data["grad_of_bias"] = bias.defined() && bias.requires_grad();
    auto sizes = input.sizes().vec();
    sizes.back() = out_features;
    return {output.view(sizes)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto state = c10::static_intrusive_pointer_cast<LayerState>(ctx->saved_data.at("state").toCapsule());
    const auto saved = ctx->get_saved_variables();
    const auto& x_transposed = saved[0];
    const auto& w_transposed = saved[1];
    const bool grad_of_input = ctx->saved_data.at("grad_of_input").toBool();
    const bool grad_of_weight = ctx->saved_data.at("grad_of_weight").toBool();
    const auto out_features = grads[0].size(-1);
    const auto grad_output = grads[0].reshape({-1, out_features});
    const auto g = cast(grad_output, gradient_format(state->recipe), grad_of_input, grad_of_weight,
                        delayed_or_null(state->grad_output, state->recipe, grad_output), state->recipe);
    at::Tensor grad_input, grad_weight, grad_bias;
    if (grad_of_input) {
      // [M, N] x [N, K]: the weight column-major is its transposed copy, viewed back.
      grad_input = at::_scaled_mm(g.data, w_transposed.t(), g.inv_scale, saved[3], std::nullopt, std::nullopt,
                                  ctx->saved_data.at("input_dtype").toScalarType())
                       .view(ctx->saved_data.at("input_sizes").toIntVector());
    }
    if (grad_of_weight) {
      // [N, M] x [M, K]: the gradient's transposed copy times the input column-major.
      grad_weight = at::_scaled_mm(g.transposed, x_transposed.t(), g.inv_scale, saved[2], std::nullopt, std::nullopt,
                                   ctx->saved_data.at("weight_dtype").toScalarType());
    }
    if (ctx->saved_data.at("grad_of_bias").toBool())
      grad_bias = grad_output.sum({0}, false, ctx->saved_data.at("bias_dtype").toScalarType());
    return {at::Tensor(), grad_input, grad_weight, grad_bias};
  }
};

// _scaled_mm's shape rule, for the forward and both gradients: every dimension a multiple of 16.
inline bool fits(const at::Tensor& input, const at::Tensor& weight) {
  if (!input.is_cuda() || input.dim() < 2 || weight.dim() != 2) return false;
  const auto in_features = weight.size(1), rows = input.numel() / std::max<int64_t>(in_features, 1);
  const auto dtype_fits = [](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
  };
  return in_features % 16 == 0 && weight.size(0) % 16 == 0 && rows % 16 == 0 && rows > 0 && dtype_fits(input) &&
         dtype_fits(weight);
}

}  // namespace detail
#endif

ACC_DECL std::string unsupported_reason(c10::Device device) {
#if ACC_HAS_FP8
  if (!device.is_cuda()) return "fp8 runs on CUDA GPUs only, and this process's device is " + device.str();
  int major = 0, minor = 0;
  const int index = device.has_index() ? device.index() : 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index);
  if (major * 10 + minor < 89)
    return "fp8 matrix multiplies need compute capability 8.9 or newer (Ada, Hopper, Blackwell); " + device.str() +
           " has " + std::to_string(major) + "." + std::to_string(minor);
  return "";
#else
  (void)device;
  return "this build has no fp8: it needs a CUDA build of libtorch 2.1 or newer with accelerate-cpp's fp8 kernels "
         "(the acc::fp8 library CMake builds where it finds CUDA)";
#endif
}

ACC_DECL ScaledLinear::ScaledLinear(FP8Recipe recipe) : state_(c10::make_intrusive<LayerState>(std::move(recipe))) {}

ACC_DECL at::Tensor ScaledLinear::operator()(const at::Tensor& input, const at::Tensor& weight,
                                             const at::Tensor& bias) {
#if ACC_HAS_FP8
  if (detail::fits(input, weight)) {
    state_->grad_enabled = at::GradMode::is_enabled();  // no transposed copies for a forward without backward
    return detail::ScaledLinearFunction::apply(state_, input, weight, bias)[0];
  }
#endif
  return at::linear(input, weight, bias);
}

}  // namespace acc::fp8
