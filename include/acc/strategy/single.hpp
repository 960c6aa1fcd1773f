// Single: one process on one device (a GPU if there is one, else the CPU); nothing to synchronize.
#pragma once

#include <acc/accelerator_options.hpp>
#include <acc/comm/device.hpp>
#include <acc/comm/local.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {

class Single {
 public:
  static constexpr std::string_view name = "NO";

  explicit Single(const AcceleratorOptions&) {}

  c10::Device device(const ProcessEnvironment& env, bool force_cpu) {
    if (env.world_size != 1)
      throw Error("this program was built with acc::Single but started as " + std::to_string(env.world_size) +
                  " processes (" + env.launcher +
                  " variables); run it as one process, or use a distributed "
                  "strategy (acc::CPU, acc::DDP) for several");
    comm_ = LocalComm(default_device(env, force_cpu));
    return comm_.device();
  }

  template <class Holder>
  void prepare_model(Holder& module, c10::Device device) {
    module->to(device);
  }
  void release() {}

  void backward(const at::Tensor& loss) { loss.backward(); }
  void synchronize_gradients() {}
  void set_gradient_sync(bool) {}
  template <class Optimizer>
  void zero_grad(Optimizer& optimizer) {
    optimizer.zero_grad();
  }
  LocalComm& comm() { return comm_; }

  // Checkpoints: the model's parameters and buffers by name, and loading them back.
  template <class Holder>
  std::vector<std::pair<std::string, at::Tensor>> full_state(const Holder& module) {
    return detail::module_state(*module);
  }
  template <class Holder>
  void load_full_state(Holder& module, const std::map<std::string, at::Tensor>& state) {
    detail::load_module_state(*module, state);
  }

 private:
  LocalComm comm_;
};

}  // namespace acc
