// A C++ GradScaler (libtorch has none): dynamic loss scaling for fp16. The loss is multiplied by
// the scale before backward; before the optimizer steps, the gradients are divided by it and
// checked for inf/NaN; a step with any is skipped and the scale backs off, and after
// growth_interval clean steps it grows. Defaults are Accelerate's GradScalerKwargs. It is FP16's
// loss scaler (the interface precision policies' scalers share is in precision/precision.hpp).
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/detail/torch_compat.hpp>

#include <ATen/ops/full.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Device.h>
#include <torch/arg.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace acc {

class GradScalerOptions {
 public:
  TORCH_ARG(double, init_scale) = 65536.0;
  TORCH_ARG(double, growth_factor) = 2.0;
  TORCH_ARG(double, backoff_factor) = 0.5;
  TORCH_ARG(int64_t, growth_interval) = 2000;
};

class GradScaler {
 public:
  // What a checkpoint keeps of it.
  struct State {
    double scale;
    int64_t growth_tracker;
  };

  GradScaler(GradScalerOptions options, c10::Device device)
      : options_(options),
        scale_(at::full({1}, options.init_scale(), at::TensorOptions(device).dtype(at::kFloat))),
        growth_tracker_(at::zeros({1}, at::TensorOptions(device).dtype(at::kInt))),
        found_inf_(at::zeros({1}, at::TensorOptions(device).dtype(at::kFloat))) {}

  at::Tensor scale(const at::Tensor& loss) const { return loss * scale_.to(loss.scalar_type()); }

  // Divides the gradients by the scale and notes whether any is inf or NaN. found_inf() then
  // says so (1) or not (0).
  // Gradients on another device than the scale (FSDP's shards offloaded to the CPU) are unscaled
  // where they are, as ATen's fused op wants all its tensors on one device.
  void unscale(const std::vector<at::Tensor>& grads);
  // The same, with the gradients that `gradients()` returns (the Accelerator's call: a scaler
  // with nothing to do never asks for them).
  template <class Gradients, std::enable_if_t<std::is_invocable_v<Gradients&>, int> = 0>
  void unscale(Gradients&& gradients) {
    unscale(gradients());
  }
  at::Tensor& found_inf() { return found_inf_; }

  // Whether the step is skipped: inf or NaN in the gradients of any rank (a collective: every
  // rank calls it after unscale, and all decide alike).
  template <class Comm>
  bool skips_step(Comm& comm) {
    return found_inf_on_any_rank(comm).item().toFloat() > 0;
  }
  // The same, left on the device for an optimizer that skips there (acc::optim::AdamW::step_unless):
  // 1 if any rank found inf or NaN, else 0. The host does not wait for it.
  template <class Comm>
  const at::Tensor& found_inf_on_any_rank(Comm& comm) {
    comm.all_reduce(found_inf_, ReduceOp::max);
    return found_inf_;
  }

  // After the step (taken or skipped): back off or grow.
  void update() {
    compat::amp_update_scale(scale_, growth_tracker_, found_inf_, options_.growth_factor(), options_.backoff_factor(),
                             options_.growth_interval());
  }

  double scale_value() const { return scale_.item<double>(); }
  State state() const { return {scale_.item<double>(), growth_tracker_.item<int64_t>()}; }
  void load(const State& state) {
    scale_.fill_(state.scale);
    growth_tracker_.fill_(state.growth_tracker);
  }
  const GradScalerOptions& options() const { return options_; }

 private:
  GradScalerOptions options_;
  at::Tensor scale_;
  at::Tensor growth_tracker_;
  at::Tensor found_inf_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/precision/impl/grad_scaler.ipp>
#endif
