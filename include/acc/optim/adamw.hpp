// acc::optim::AdamW: torch::optim::AdamW with the same options, state and checkpoints, whose step()
// updates all parameters of a group together. libtorch's C++ AdamW launches about ten kernels per
// parameter; a small model's step is then bound by kernel launches, which is why Python's default
// AdamW is the "foreach" one. Here: on CUDA with libtorch >= 2.1 one fused kernel per group
// (Python's fused=True), elsewhere ATen's _foreach_ ops, which on CPU compute exactly what
// torch::optim::AdamW computes.
//
//   acc::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(3e-4));
#pragma once

#include <acc/detail/linkage.hpp>

#include <torch/optim/adamw.h>

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

namespace acc::optim {

class AdamW : public torch::optim::AdamW {
 public:
  // fastest: the fused kernel where it exists (results within rounding of torch's AdamW);
  // foreach: always the _foreach_ ops (bit-identical to torch::optim::AdamW on CPU).
  enum class Kernel { fastest, foreach };

  explicit AdamW(std::vector<torch::optim::OptimizerParamGroup> groups, torch::optim::AdamWOptions defaults = {},
                 Kernel kernel = Kernel::fastest)
      : torch::optim::AdamW(std::move(groups), defaults), kernel_(kernel) {}
  explicit AdamW(std::vector<at::Tensor> params, torch::optim::AdamWOptions defaults = {},
                 Kernel kernel = Kernel::fastest)
      : AdamW({torch::optim::OptimizerParamGroup(std::move(params))}, defaults, kernel) {}

  at::Tensor step(LossClosure closure = nullptr) override;

  // A step, unless `found_inf` (one float32 element, on the parameters' device) is nonzero: FP16's
  // step after an overflow check. With the fused kernel (CUDA) the kernel skips itself and each
  // parameter's step count stays on the device, so the host never waits for the GPU (the counts
  // are copied back when the optimizer is saved or steps plainly); elsewhere the host reads it.
  void step_unless(const at::Tensor& found_inf);

  // The step counts are the device's, if it has them.
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  struct Tensors {
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  struct DeviceStep {
    at::Tensor param;
    at::Tensor step;  // float32, one element, on the parameter's device
  };

  torch::optim::AdamWParamState& state_of(const at::Tensor& p);
  void update(const Tensors& t, int64_t step, const torch::optim::AdamWOptions& options);
  bool fuses(const at::Tensor& p) const;
  // Copies the device's step counts into the parameters' states, and forgets them.
  void settle_steps();

  Kernel kernel_;
  std::unordered_map<const c10::TensorImpl*, DeviceStep> device_steps_;
};

}  // namespace acc::optim

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/optim/impl/adamw.ipp>
#endif
