// Single: one process on one device (a GPU if there is one, else the CPU); nothing to synchronize.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/comm/device.hpp>
#include <acc/comm/local.hpp>
#include <acc/config/environment.hpp>
#include <acc/error.hpp>
#include <acc/strategy/replicated.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <string_view>
#include <tuple>

namespace acc {

class Single : public ReplicatedModel {
 public:
  static constexpr std::string_view name = "NO";
  using options_type = std::tuple<>;

  template <class Config>
  static bool matches(const Config& config) {
    return config.distributed_type == name;
  }
  static std::string spelling() { return std::string(name); }

  c10::Device device(const ProcessEnvironment& env, bool force_cpu) {
    if (env.world_size != 1)
      throw Error("this program was built with acc::Single but started as " + std::to_string(env.world_size) +
                  " processes (" + env.launcher +
                  " variables); run it as one process, or use a distributed "
                  "strategy (acc::CPU, acc::DDP) for several");
    comm_ = LocalComm(default_device(env, force_cpu));
    return comm_.device();
  }

  void prepare_model(const std::shared_ptr<torch::nn::Module>& module, c10::Device device) {
    if (const auto empty = meta_tensor_names(*module); !empty.empty())
      throw Error("the model given to prepare() has tensors on the meta device ('" + empty.front() +
                  "' among them), built inside acc::init_empty_weights(): one process has no other rank to take "
                  "weights from; load them first (acc::load_checkpoint_in_model(*model, path)), or give it storage "
                  "(acc::materialize(*model, device))");
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

 private:
  LocalComm comm_;
};

}  // namespace acc
