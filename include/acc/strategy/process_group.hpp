// What the distributed strategies (DDP, FSDP) share: the checks of their communication policy,
// joining the job (rendezvous, then the communicator), starting every rank from rank 0's weights
// (also where the others built their model empty), and dropping the gradients at zero_grad.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/comm/comm.hpp>
#include <acc/comm/device.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/environment.hpp>
#include <acc/error.hpp>
#include <acc/nn/split_layers.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Device.h>
#include <torch/csrc/utils/tensor_flatten.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <chrono>
#include <cstddef>
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

// A model split by acc::tp::parallelize holds different shards on the ranks of a tensor-parallel
// group: a strategy that gives every rank rank 0's state and averages gradients over the world
// would mix them. `fix` says what to do instead.
inline void refuse_tensor_parallel_model(const torch::nn::Module& module, const std::string& strategy,
                                         const std::string& fix) {
  const auto split = nn::split_layer_names(module);
  if (split.empty()) return;
  throw Error(strategy + " cannot prepare a model split by acc::tp::parallelize (its layer '" + split.front() +
              "' is split): it would give every rank rank 0's shards and average gradients across the "
              "tensor-parallel group; " +
              fix + " (docs/tensor_parallelism.md)");
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
  // For the strategy's communicators over sub-groups (hybrid sharding, tensor parallelism).
  const ProcessGroupOptions& options() const { return options_; }

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

// Every rank takes rank 0's parameters and buffers, flattened into buckets of at most this many
// bytes (as PyTorch's module-state sync does): a rank holds one bucket's copy beside the model, not
// a copy of the model.
inline constexpr std::size_t kModuleStateBucketBytes = std::size_t{256} << 20;
template <class Comm>
void broadcast_module_state(Comm& comm, torch::nn::Module& module) {
  std::vector<at::Tensor> state;
  for (const auto& p : module.parameters()) state.push_back(p);
  for (const auto& b : module.buffers()) state.push_back(b);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> bucket;
  std::size_t bytes = 0;
  const auto send = [&] {
    if (bucket.empty()) return;
    auto flat = torch::utils::flatten_dense_tensors(bucket);
    comm.broadcast(flat, 0);
    const auto values = torch::utils::unflatten_dense_tensors(flat, bucket);
    for (std::size_t i = 0; i < bucket.size(); ++i) bucket[i].copy_(values[i]);
    bucket.clear();
    bytes = 0;
  };
  for (const auto& t : state) {
    if (!bucket.empty() && bytes + t.nbytes() > kModuleStateBucketBytes) send();
    bucket.push_back(t);
    bytes += t.nbytes();
  }
  send();
}

// Which ranks built their model empty (tensors on the meta device, acc::init_empty_weights()):
// known to every rank after one small all-reduce, so that all take the same path or fail alike.
// Rank 0 is where the others' weights come from: an empty model there is an error naming
// `strategy`.
template <class Comm>
std::vector<int> ranks_with_empty_models(Comm& comm, const torch::nn::Module& module, const std::string& strategy) {
  const auto names = meta_tensor_names(module);
  auto flags = at::zeros({comm.world_size()}, at::TensorOptions(comm.device()).dtype(at::kFloat));
  if (!names.empty()) flags[comm.rank()].fill_(1);
  comm.all_reduce(flags, ReduceOp::sum);
  const auto on_cpu = flags.to(at::kCPU);
  std::vector<int> ranks;
  for (int r = 0; r < comm.world_size(); ++r)
    if (on_cpu[r].template item<float>() > 0) ranks.push_back(r);
  if (!ranks.empty() && ranks.front() == 0)
    throw Error(strategy + ": the model on rank 0 has tensors on the meta device" +
                (names.empty() ? std::string() : " ('" + names.front() + "' among them)") +
                ", built inside acc::init_empty_weights(); the other ranks take their weights from rank 0, so "
                "rank 0 needs real ones before prepare: load them (acc::load_checkpoint_in_model(*model, path)), "
                "or build the model outside the scope on the main process");
  return ranks;
}

// "rank 2", "ranks 1, 2".
inline std::string ranks_text(const std::vector<int>& ranks) {
  std::string text = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) text += (i ? ", " : "") + std::to_string(ranks[i]);
  return text;
}

// Module::to for the tensors that have storage; meta ones stay as they are.
inline void move_real_tensors(torch::nn::Module& module, c10::Device device) {
  at::NoGradGuard no_grad;
  const auto move = [&](const at::Tensor& t) {
    if (!t.is_meta() && t.device() != device) t.set_data(t.to(device));
  };
  for (const auto& p : module.parameters()) move(p);
  for (const auto& b : module.buffers()) move(b);
}

// Each tensor takes rank 0's values, one broadcast at a time; an empty (meta) one gets storage on
// `device` first.
template <class Comm>
void broadcast_each_from_rank0(Comm& comm, const std::vector<at::Tensor>& tensors, c10::Device device) {
  at::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    if (t.is_meta()) assign_in_place(t, at::empty(t.sizes(), t.options().device(device)));
    auto values = t.detach();
    comm.broadcast(values, 0);
  }
}

}  // namespace acc::detail
