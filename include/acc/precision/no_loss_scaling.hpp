// NoLossScaling: the loss scaler of the precisions that need none (fp32's and bf16's exponent
// range holds the gradients). Every call does nothing, and a step is never skipped.
#pragma once

#include <acc/precision/grad_scaler.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace acc {

struct NoLossScaling {
  NoLossScaling(const GradScalerOptions&, c10::Device) {}
  const at::Tensor& scale(const at::Tensor& loss) const { return loss; }
  template <class Gradients>
  void unscale(Gradients&&) {}  // never asks for the gradients
  template <class Comm>
  bool skips_step(Comm&) {
    return false;
  }
  void update() {}
};

}  // namespace acc
