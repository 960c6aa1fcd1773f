// The tiny MLP of ../shared/DEVICE.md's baselines (512-512-10, batch 64, AdamW) and its plain
// libtorch training step, shared by bench/step_overhead.cpp and bench/captured_step.cpp.
#pragma once

#include <acc/precision/grad_scaler.hpp>
#include <acc/precision/precision.hpp>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace bench {

struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(512, 512))),
        fc2(register_module("fc2", torch::nn::Linear(512, 512))),
        fc3(register_module("fc3", torch::nn::Linear(512, 10))) {}
  at::Tensor forward(const at::Tensor& x) { return fc3(torch::relu(fc2(torch::relu(fc1(x))))); }
  torch::nn::Linear fc1, fc2, fc3;
};
TORCH_MODULE(Mlp);

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The loop a user writes without acc: the same autocast, and with fp16 the loss scaled by hand as
// a careful libtorch user would, skipping on the GPU where the optimizer can (acc::optim::AdamW).
template <class Precision, class Optimizer>
class PlainMlpStep {
 public:
  explicit PlainMlpStep(const c10::Device& device)
      : device_(device),
        optimizer_(parameters_on(net_, device), torch::optim::AdamWOptions(1e-3)),
        scaler_(acc::GradScalerOptions(), device) {}

  template <class Batch>
  void operator()(const Batch& b) {
    optimizer_.zero_grad();
    at::Tensor loss;
    {
      typename Precision::forward_scope autocast(device_);
      loss = torch::nn::functional::cross_entropy(net_(b.data), b.target);
    }
    if constexpr (acc::uses_grad_scaler_v<Precision>) {
      scaler_.scale(loss).backward();
      std::vector<at::Tensor> grads;
      for (const auto& p : net_->parameters()) grads.push_back(p.grad());
      scaler_.unscale(grads);
      if constexpr (has_step_unless)
        optimizer_.step_unless(scaler_.found_inf());
      else if (scaler_.found_inf().template item<float>() == 0)
        optimizer_.step();
      scaler_.update();
    } else {
      loss.backward();
      optimizer_.step();
    }
  }

 private:
  static std::vector<at::Tensor> parameters_on(Mlp& net, const c10::Device& device) {
    net->to(device);
    return net->parameters();
  }
  template <class O, class = void>
  struct skips_on_device : std::false_type {};
  template <class O>
  struct skips_on_device<O, std::void_t<decltype(std::declval<O&>().step_unless(std::declval<at::Tensor&>()))>>
      : std::true_type {};
  static constexpr bool has_step_unless = skips_on_device<Optimizer>::value;

  c10::Device device_;
  Mlp net_;
  Optimizer optimizer_;
  acc::GradScaler scaler_;
};

}  // namespace bench
