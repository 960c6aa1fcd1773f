// DDP<Comm>: one process per device, every rank holding the whole model; gradients averaged across
// ranks by bucketed all-reduces that overlap backward (detail/gradient_buckets.hpp). CPU is DDP
// over Gloo on CPU devices.
#pragma once

#include <acc/accelerator_options.hpp>
#include <acc/comm/comm.hpp>
#include <acc/comm/gloo.hpp>
#include <acc/comm/nccl.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/gradient_buckets.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/detail/process_group.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {

template <class Comm>
class DDP {
  static_assert(is_comm_policy_v<Comm>, "DDP's parameter must be a communication policy: acc::Gloo or acc::Nccl");
  static constexpr bool comm_is_built = Comm::available;
  static_assert(comm_is_built,
                "this build lacks the chosen communication backend: acc::Nccl needs libtorch with CUDA and nccl.h "
                "(ACC_HAS_NCCL), acc::Gloo needs libtorch's Gloo headers (ACC_HAS_GLOO); pick the other one, or "
                "build where it exists");

 public:
  static constexpr bool on_cpu = std::is_same_v<Comm, Gloo>;
  static constexpr std::string_view name = on_cpu ? "MULTI_CPU" : "MULTI_GPU";

  explicit DDP(const AcceleratorOptions& options) : options_(options.ddp()), process_group_(options.process_group()) {}

  // Joins the job: rendezvous (an in-process store when alone), then the communicator.
  c10::Device device(const ProcessEnvironment& env, bool force_cpu) {
    return detail::join_process_group(on_cpu ? "acc::CPU" : "DDP<Nccl>", env, force_cpu, process_group_, store_, comm_);
  }

  // Places the model on the device, makes every rank start from rank 0's weights, and puts its
  // gradients into buckets: new ones for a model prepared again (two sets would race), and the
  // buckets of models that are gone are dropped.
  template <class Holder>
  void prepare_model(Holder& module, c10::Device device) {
    module->to(device);
    detail::broadcast_module_state(*comm_, *module);
    buckets_.erase(std::remove_if(buckets_.begin(), buckets_.end(),
                                  [&](const ModelBuckets& b) {
                                    const auto model = b.model.lock();
                                    return !model || model == module.ptr();
                                  }),
                   buckets_.end());
    std::vector<std::pair<std::string, at::Tensor>> trained;
    for (const auto& p : module->named_parameters())
      if (p.value().requires_grad()) trained.emplace_back(p.key(), p.value());
    if (!trained.empty())
      buckets_.push_back({module.ptr(), std::make_unique<detail::GradientBuckets<Comm>>(*comm_, trained, options_)});
  }
  // Accelerator::free_memory: every model's buckets go.
  void release() { buckets_.clear(); }

  void backward(const at::Tensor& loss) {
    for (auto& b : buckets_) b.buckets->prepare_for_backward(loss);
    loss.backward();
    synchronize_gradients();
  }

  // Waits for the buckets' all-reduces still in flight (none after accelerator.backward).
  void synchronize_gradients() {
    for (auto& b : buckets_) b.buckets->finish();
  }

  void set_gradient_sync(bool enabled) {
    for (auto& b : buckets_) b.buckets->set_enabled(enabled);
  }

  // Drops the gradients (zero_grad(set_to_none)); the buckets take the next ones in.
  template <class Optimizer>
  void zero_grad(Optimizer& optimizer) {
    for (auto& group : optimizer.param_groups())
      for (auto& p : group.params())
        if (p.grad().defined()) p.mutable_grad().reset();
  }

  Comm& comm() { return *comm_; }

  // Checkpoints: every rank holds the whole model, so each gives its own parameters and buffers
  // (rank 0 writes them) and loads the full state as it is.
  template <class Holder>
  std::vector<std::pair<std::string, at::Tensor>> full_state(const Holder& module) {
    return detail::module_state(*module);
  }
  template <class Holder>
  void load_full_state(Holder& module, const std::map<std::string, at::Tensor>& state) {
    detail::load_module_state(*module, state);
  }

  // All-reduces started so far by the buckets of the models prepared now (for tests and benchmarks).
  int64_t gradient_collectives() const {
    int64_t count = 0;
    for (const auto& b : buckets_) count += b.buckets->collectives_started();
    return count;
  }
  std::size_t bucket_count() const {
    std::size_t count = 0;
    for (const auto& b : buckets_) count += b.buckets->bucket_count();
    return count;
  }

 private:
  DDPOptions options_;
  ProcessGroupOptions process_group_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::optional<Comm> comm_;
  struct ModelBuckets {
    std::weak_ptr<torch::nn::Module> model;
    std::unique_ptr<detail::GradientBuckets<Comm>> buckets;
  };
  std::vector<ModelBuckets> buckets_;
};

// Several processes on CPUs, over Gloo.
using CPU = DDP<Gloo>;

}  // namespace acc
