// acc::optim::AdamW: torch::optim::AdamW with the same options, state and checkpoints, whose step()
// updates all parameters of a group together. libtorch's C++ AdamW launches about ten kernels per
// parameter; a small model's step is then bound by kernel launches, which is why Python's default
// AdamW is the "foreach" one. Here: on CUDA with libtorch >= 2.1 one fused kernel per group
// (Python's fused=True, with its state and learning rate on the device as with capturable=True),
// elsewhere ATen's _foreach_ ops, which on CPU compute exactly what torch::optim::AdamW computes.
//
//   acc::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(3e-4));
#pragma once

#include <acc/detail/linkage.hpp>

#include <torch/optim/adamw.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
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
  // step after an overflow check. Where the step runs on the device (below) the kernel skips itself;
  // elsewhere the host reads the flag.
  void step_unless(const at::Tensor& found_inf);

  // Whether a step takes everything that changes from step to step (each parameter's step count,
  // the learning rate) from the device, so that it never waits for the GPU and can be replayed as
  // part of a CUDA graph (acc::capture_step): every parameter on CUDA, Kernel::fastest, amsgrad
  // off, libtorch >= 2.1. The step counts are copied back to the states when the optimizer is
  // saved or steps on the host.
  bool steps_on_device() const;
  // Copies each group's learning rate (as a scheduler left it) to the device, where a step on the
  // device reads it. A step does this itself; a captured step's replay does not, so acc::capture_step
  // calls it before each replay.
  void load_learning_rates();

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
  struct DeviceLearningRate {
    double loaded;
    at::Tensor value;  // float32, one element, as the fused kernel reads it
  };

  torch::optim::AdamWParamState& state_of(const at::Tensor& p);
  void step_on_device(const std::optional<at::Tensor>& found_inf);
  void step_on_host();
  // The foreach arithmetic of torch::optim::AdamW::step, for tensors that share their step count.
  void update(const Tensors& t, int64_t step, const torch::optim::AdamWOptions& options);
  bool fuses(const at::Tensor& p) const;
  // Group `group`'s learning rate on `device`, up to date.
  const at::Tensor& learning_rate(std::size_t group, const c10::Device& device);
  // Copies the device's step counts into the parameters' states, and forgets them.
  void settle_steps();

  Kernel kernel_;
  std::unordered_map<const c10::TensorImpl*, DeviceStep> device_steps_;
  std::map<std::pair<std::size_t, c10::DeviceIndex>, DeviceLearningRate> learning_rates_;
};

}  // namespace acc::optim

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/optim/impl/adamw.ipp>
#endif
