// Every difference between the libtorch versions we build against (1.13 on Debian, 2.x on the
// GPU machines) lives in this header; nothing else tests TORCH_VERSION_*.
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_amp_update_scale.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/softmax.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#define ACC_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// c10d::Store has a pure virtual clone() in libtorch 2.11 (not in 1.13): a Store of our own
// overrides it where it exists.
#define ACC_STORE_HAS_CLONE ACC_TORCH_AT_LEAST(2, 6)

#if ACC_TORCH_AT_LEAST(2, 0)
#include <ATen/ops/scaled_dot_product_attention.h>
#endif
#if ACC_TORCH_AT_LEAST(2, 1)
#include <ATen/ops/_fused_adamw.h>
#endif

namespace acc::compat {

// The libtorch version checkpoints record.
inline constexpr const char* torch_version = TORCH_VERSION;

// Optimizer archives (optimizer.save) key each parameter's state by its TensorImpl address:
// printed as a string up to 2.1, a number read back with stoull since 2.2. An archive of one kind
// loads into the other without an error but loses the state, so checkpoints record the kind.
inline constexpr int optimizer_archive_format = ACC_TORCH_AT_LEAST(2, 2) ? 2 : 1;

// 2.4 replaced the per-device autocast functions by ones taking the device type; the old names
// still exist there but warn at run time, so each version gets its own spelling.
inline bool autocast_enabled(c10::DeviceType device) {
#if ACC_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if ACC_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CUDA)
    at::autocast::set_enabled(enabled);
  else
    at::autocast::set_cpu_enabled(enabled);
#endif
}

inline at::ScalarType autocast_dtype(c10::DeviceType device) {
#if ACC_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                         : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void set_autocast_dtype(c10::DeviceType device, at::ScalarType dtype) {
#if ACC_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CUDA)
    at::autocast::set_autocast_gpu_dtype(dtype);
  else
    at::autocast::set_autocast_cpu_dtype(dtype);
#endif
}

// Whether autocast to `dtype` exists on `device` in this libtorch (CPU fp16 came with 2.x).
constexpr bool autocast_supported(c10::DeviceType device, at::ScalarType dtype) {
  if (device == c10::DeviceType::CUDA) return dtype == at::kHalf || dtype == at::kBFloat16;
  if (device == c10::DeviceType::CPU) return dtype == at::kBFloat16 || (ACC_TORCH_AT_LEAST(2, 0) && dtype == at::kHalf);
  return false;
}

// Causal self-attention over (batch, heads, seq, head_dim). 2.x has the fused kernel; 1.13 only a
// private op, so there we spell out softmax(q k^T / sqrt(d) + causal mask) v.
inline at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if ACC_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
#else
  const auto seq = q.size(-2);
  auto scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  auto future = at::ones({seq, seq}, q.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

// Attention of every query to every key, unmasked, over (batch, heads, seq, head_dim): what one
// new token's query needs against the keys of a KV cache (is_causal would align the mask to the
// first key, not the last). 2.x has the fused kernel; 1.13 spells out softmax(q k^T / sqrt(d)) v.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if ACC_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v);
#else
  const auto scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

// Multiplies every gradient by inv_scale and sets found_inf to 1 if any is inf or NaN. ATen's
// fused op has CPU kernels since 2.3; before, the CPU does it with plain ops.
inline void amp_unscale(const std::vector<at::Tensor>& grads, at::Tensor& found_inf, const at::Tensor& inv_scale) {
  if (grads.empty()) return;
#if !ACC_TORCH_AT_LEAST(2, 3)
  if (found_inf.is_cpu()) {
    for (const auto& g : grads) {
      if (!at::isfinite(g).all().item<bool>()) found_inf.fill_(1.0);
      g.mul_(inv_scale);
    }
    return;
  }
#endif
  at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
}

// The GradScaler's update: back off after an overflow, grow after growth_interval clean steps.
inline void amp_update_scale(at::Tensor& scale, at::Tensor& growth_tracker, const at::Tensor& found_inf, double growth,
                             double backoff, int64_t interval) {
#if !ACC_TORCH_AT_LEAST(2, 3)
  if (scale.is_cpu()) {
    if (found_inf.item<float>() > 0) {
      scale.mul_(backoff);
      growth_tracker.fill_(0);
    } else if (growth_tracker.item<int>() + 1 == interval) {
      scale.mul_(growth);
      growth_tracker.fill_(0);
    } else {
      growth_tracker.add_(1);
    }
    return;
  }
#endif
  at::_amp_update_scale_(scale, growth_tracker, found_inf, growth, backoff, interval);
}

// The key of a parameter in torch::optim::Optimizer::state(): its TensorImpl's address, spelled as
// a string before 2.0 and as the pointer since.
template <class StateMap>
typename StateMap::key_type optimizer_state_key(const at::Tensor& parameter) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    std::ostringstream address;  // as c10::guts::to_string spells it
    address << static_cast<const void*>(parameter.unsafeGetTensorImpl());
    return address.str();
  } else
    return parameter.unsafeGetTensorImpl();
}

// ATen's one-kernel AdamW over many CUDA tensors (what Python's AdamW(fused=True) calls) came
// with 2.1. `steps` are the steps after this one, as float tensors on the parameters' device.
inline constexpr bool has_fused_adamw = ACC_TORCH_AT_LEAST(2, 1);
// The learning rate is a float32 element on the parameters' device, read by the kernel (so that a
// CUDA graph's replay sees its current value); with found_inf (the same kind of element) the kernel
// leaves everything unchanged where it is nonzero.
inline void fused_adamw(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                        const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                        const std::vector<at::Tensor>& steps, const at::Tensor& lr, double beta1, double beta2,
                        double weight_decay, double eps, const std::optional<at::Tensor>& found_inf = std::nullopt) {
#if ACC_TORCH_AT_LEAST(2, 3)
  at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr, beta1, beta2, weight_decay,
                    eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, found_inf);
#elif ACC_TORCH_AT_LEAST(2, 1)  // no tensor learning rate yet: read it on the host
  at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr.item<double>(), beta1,
                    beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt,
                    found_inf);
#else
  (void)params, (void)grads, (void)exp_avgs, (void)exp_avg_sqs, (void)steps, (void)lr, (void)beta1, (void)beta2,
      (void)weight_decay, (void)eps, (void)found_inf;
  TORCH_CHECK(false, "fused AdamW needs libtorch 2.1 or newer");
#endif
}

}  // namespace acc::compat
