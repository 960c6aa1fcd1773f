// What the distributed strategies (DDP, FSDP) share: the checks of their communication policy,
// joining the job (rendezvous, then the communicator), starting every rank from rank 0's weights,
// and dropping the gradients at zero_grad.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/device.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/environment.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/Device.h>
#include <torch/csrc/utils/tensor_flatten.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc::detail {

// One rendezvous per process; each communicator made after it (every rank makes them in the same
// order) gets a key space of its own in the job's store, so that a process may hold several.
inline c10::intrusive_ptr<c10d::Store> next_group_store(const ProcessEnvironment& env) {
  static int groups = 0;
  return c10::make_intrusive<c10d::PrefixStore>("acc/group" + std::to_string(groups++), job_store(env));
}

// Whether Comm is a communication policy built into this binary (its other members exist then).
template <class Comm, class = void>
struct comm_is_built : std::false_type {};
template <class Comm>
struct comm_is_built<Comm, std::enable_if_t<Comm::available>> : std::true_type {};

// A distributed strategy's process group: made from its options, joined when the Accelerator asks
// for the device. `strategy` names the strategy in messages ("DDP<nccl>").
template <class Comm>
class ProcessGroup {
  static_assert(is_comm_policy_v<Comm>,
                "a distributed strategy's communication parameter must be a communication policy: acc::Gloo or "
                "acc::Nccl (see include/acc/comm/comm.hpp)");
  static constexpr bool comm_is_built = Comm::available;
  static_assert(comm_is_built,
                "this build lacks the chosen communication backend: acc::Nccl needs libtorch with CUDA and nccl.h "
                "(ACC_HAS_NCCL), acc::Gloo needs libtorch's Gloo headers (ACC_HAS_GLOO); pick the other one, or "
                "build where it exists");

 public:
  ProcessGroup(std::string strategy, ProcessGroupOptions options)
      : strategy_(std::move(strategy)), options_(std::move(options)) {}

  // Rendezvous (an in-process store when alone), then the communicator; returns its device.
  c10::Device join(const ProcessEnvironment& env, bool force_cpu) {
    if constexpr (Comm::device_type == c10::DeviceType::CUDA) {
      if (force_cpu || env.use_cpu)
        throw Error(strategy_ +
                    " runs on GPUs but the CPU was asked for (--cpu / ACCELERATE_USE_CPU); use its Gloo "
                    "variant (acc::CPU for DDP, acc::FSDP<acc::Gloo> for FSDP)");
      if (!torch::cuda::is_available())
        throw Error(strategy_ + " needs CUDA GPUs and none is visible; use its Gloo variant to train on CPUs");
      (void)default_device(env);  // names the problem when there are fewer GPUs than local ranks
    }
    if (env.world_size == 1)
      store_ = c10::make_intrusive<c10d::HashStore>();
    else
      store_ = next_group_store(env);
    comm_.emplace(env, store_, options_);
    return comm_->device();
  }

  Comm& comm() { return *comm_; }

  // zero_grad(set_to_none): the strategies' gradient buckets and shards take the next ones in.
  template <class Optimizer>
  static void drop_gradients(Optimizer& optimizer) {
    for (auto& group : optimizer.param_groups())
      for (auto& p : group.params())
        if (p.grad().defined()) p.mutable_grad().reset();
  }

 private:
  std::string strategy_;
  ProcessGroupOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::optional<Comm> comm_;
};

// Every rank takes rank 0's parameters and buffers (one broadcast of them all, flattened).
template <class Comm>
void broadcast_module_state(Comm& comm, torch::nn::Module& module) {
  std::vector<at::Tensor> state;
  for (const auto& p : module.parameters()) state.push_back(p);
  for (const auto& b : module.buffers()) state.push_back(b);
  if (state.empty()) return;
  auto flat = torch::utils::flatten_dense_tensors(state);
  comm.broadcast(flat, 0);
  const auto values = torch::utils::unflatten_dense_tensors(flat, state);
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < state.size(); ++i) state[i].copy_(values[i]);
}

}  // namespace acc::detail
