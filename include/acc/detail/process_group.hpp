// What the distributed strategies share: joining the job (rendezvous, then the communicator) and
// starting every rank from rank 0's weights.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/device.hpp>
#include <acc/comm/gloo.hpp>
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
#include <vector>

namespace acc::detail {

// One rendezvous per process; each communicator made after it (every rank makes them in the same
// order) gets a key space of its own in the job's store, so that a process may hold several.
inline c10::intrusive_ptr<c10d::Store> next_group_store(const ProcessEnvironment& env,
                                                        std::chrono::milliseconds timeout) {
  static int groups = 0;
  return c10::make_intrusive<c10d::PrefixStore>("acc/group" + std::to_string(groups++), job_store(env, timeout));
}

// Rendezvous (an in-process store when alone), then the communicator; returns its device.
// `strategy` names the caller in messages ("DDP<Nccl>").
template <class Comm>
c10::Device join_process_group(const std::string& strategy, const ProcessEnvironment& env, bool force_cpu,
                               const ProcessGroupOptions& options, c10::intrusive_ptr<c10d::Store>& store,
                               std::optional<Comm>& comm) {
  if constexpr (!std::is_same_v<Comm, Gloo>) {
    if (force_cpu || env.use_cpu)
      throw Error(strategy +
                  " runs on GPUs but the CPU was asked for (--cpu / ACCELERATE_USE_CPU); use its Gloo "
                  "variant (acc::CPU for DDP, acc::FSDP<acc::Gloo> for FSDP)");
    if (!torch::cuda::is_available())
      throw Error(strategy + " needs CUDA GPUs and none is visible; use its Gloo variant to train on CPUs");
    (void)default_device(env);  // names the problem when there are fewer GPUs than local ranks
  }
  if (env.world_size == 1) {
    store = c10::make_intrusive<c10d::HashStore>();
  } else {
    store = next_group_store(env, rendezvous_timeout());
  }
  comm.emplace(env, store, options);
  return comm->device();
}

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
