// DDP<Comm, Hook>: one process per device, every rank holding the whole model; gradients averaged
// across ranks by bucketed collectives that overlap backward (strategy/gradient_buckets.hpp), each
// bucket handed to the communication hook (strategy/ddp_hook.hpp; the default all-reduces). Its
// distributed_type is where Comm's tensors live: MULTI_CPU or MULTI_GPU. CPU is DDP over Gloo.
// Beside tensor parallelism (DDPOptions::tp_size) the model is one acc::tp::parallelize split over
// groups of tp_size consecutive ranks: gradients are averaged over the ranks that hold the same
// slices (an acc::DeviceMesh's dp group), and checkpoints hold the whole weights.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/comm/comm.hpp>
#include <acc/comm/gloo.hpp>
#include <acc/comm/nccl.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/environment.hpp>
#include <acc/mesh/device_mesh.hpp>
#include <acc/nn/split_layers.hpp>
#include <acc/strategy/ddp_hook.hpp>
#include <acc/strategy/ddp_options.hpp>
#include <acc/strategy/gradient_buckets.hpp>
#include <acc/strategy/process_group.hpp>
#include <acc/strategy/replicated.hpp>
#include <acc/strategy/tensor_parallel.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace acc {

template <class Comm, class Hook = AllReduceHook>
class DDP : public ReplicatedModel {
  static_assert(!detail::comm_is_built<Comm>::value || is_ddp_hook_v<Hook, Comm>,
                "DDP's second parameter must be a communication hook: a type, default-constructible or "
                "constructible from DDPOptions, whose operator()(comm, bucket) starts the bucket's averaging and "
                "returns a handle with wait() (see include/acc/strategy/ddp_hook.hpp)");

 public:
  static constexpr std::string_view name = Comm::device_type == c10::DeviceType::CPU ? "MULTI_CPU" : "MULTI_GPU";
  using options_type = std::tuple<DDPOptions, ProcessGroupOptions>;

  // The config's distributed_type, and its acc.ddp_comm_hook naming this hook.
  template <class Config>
  static bool matches(const Config& config) {
    return config.distributed_type == name && config.ddp_comm_hook == hook_name_v<Hook>;
  }
  static std::string spelling() {
    return std::string(name) +
           (hook_name_v<Hook> == hook_name_v<AllReduceHook> ? "" : " ddp_comm_hook=" + std::string(hook_name_v<Hook>));
  }

  DDP(DDPOptions options, ProcessGroupOptions process_group)
      : options_(std::move(options)),
        group_("DDP<" + std::string(Comm::name) + ">", std::move(process_group)),
        hook_(detail::make_hook<Hook>(options_)) {}

  // Joins the job: rendezvous (an in-process store when alone), then the communicator; beside
  // tensor parallelism then the one over the ranks that hold this rank's slices.
  c10::Device device(const ProcessEnvironment& env, bool force_cpu) {
    // A tp size that does not divide the world fails on every rank before any rank connects.
    const auto replicas = data_parallel_size(options_.tp_size(), env.world_size, "DDPOptions::tp_size");
    const auto device = group_.join(env, force_cpu);
    if (options_.tp_size() > 1) {
      const MeshShape shape{static_cast<int>(replicas), 1, static_cast<int>(options_.tp_size())};
      data_.emplace(env, job_store(env), group_.options(),
                    RankGroup(mesh_group_ranks(shape, env.rank, std::nullopt), env.rank, env.world_size));
    }
    return device;
  }

  // Places the model on the device, makes every rank start from rank 0's weights, and puts its
  // gradients into buckets: new ones for a model prepared again (two sets would race), and the
  // buckets of models that are gone are dropped.
  void prepare_model(const std::shared_ptr<torch::nn::Module>& module, c10::Device device) {
    const auto split = nn::split_tensors(*module);
    detail::check_tensor_parallel_split(*module, split, options_.tp_size(), comm().rank(), "DDP", "DDPOptions",
                                        "averages gradients over");
    // Every rank holds the whole model (its slices) and takes the state of the first rank holding
    // the same here, so a model built empty (acc::init_empty_weights()) on the others only needs
    // storage first.
    if (!detail::ranks_with_empty_models(data_comm(), *module, "DDP").empty()) materialize(*module, device);
    module->to(device);
    detail::broadcast_module_state(data_comm(), *module);
    buckets_.erase(std::remove_if(buckets_.begin(), buckets_.end(),
                                  [&](const ModelBuckets& b) {
                                    const auto model = b.model.lock();
                                    return !model || model == module;
                                  }),
                   buckets_.end());
    std::vector<std::pair<std::string, at::Tensor>> trained;
    std::vector<at::Tensor> cut;
    for (const auto& p : module->named_parameters())
      if (p.value().requires_grad()) {
        trained.emplace_back(p.key(), p.value());
        if (split.count(p.key())) cut.push_back(p.value());
      }
    // Bucket indices are never reused, so that a hook's state for a bucket stays that bucket's.
    if (!trained.empty())
      buckets_.push_back({module,
                          std::make_unique<detail::GradientBuckets<Comm, Hook>>(data_comm(), hook_, trained, options_,
                                                                                &next_bucket_index_),
                          std::move(cut)});
    find_sliced();
  }
  // Accelerator::free_memory: every model's buckets go, and the hook's state with them.
  void release() {
    buckets_.clear();
    sliced_.clear();
    hook_ = detail::make_hook<Hook>(options_);
  }

  void backward(const at::Tensor& loss) {
    for (auto& b : buckets_) b.buckets->prepare_for_backward(loss);
    loss.backward();
    synchronize_gradients();
  }

  // Ties the gradient hooks to the current CUDA stream, where the next forwards run (a captured
  // step's stream; see GradientBuckets::rebind_accumulators).
  void adopt_current_stream() {
    for (auto& b : buckets_) b.buckets->rebind_accumulators();
  }

  // Waits for the buckets' collectives still in flight (none after accelerator.backward).
  void synchronize_gradients() {
    for (auto& b : buckets_) b.buckets->finish();
  }

  // For a process that is out of batches (acc::JoinUnevenInputs): the collectives of one step's
  // gradient averaging, on zeros, matching those of the processes still training.
  void average_zero_gradients() {
    for (auto& b : buckets_) b.buckets->average_zeros();
  }

  void set_gradient_sync(bool enabled) {
    for (auto& b : buckets_) b.buckets->set_enabled(enabled);
  }

  template <class Optimizer>
  void zero_grad(Optimizer& optimizer) {
    group_.drop_gradients(optimizer);
  }

  // Clips `parameters`' gradients by their norm, as torch::nn::utils::clip_grad_norm_ does; beside
  // tensor parallelism the norm of the whole model's, each slice and each tensor left whole counted
  // once (a collective: every rank calls it with its own parameters).
  double clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm, double norm_type) {
    if (options_.tp_size() == 1) return torch::nn::utils::clip_grad_norm_(parameters, max_norm, norm_type);
    std::vector<at::Tensor> cut, whole;
    for (const auto& p : parameters)
      if (p.grad().defined())
        (sliced_.count(p.unsafeGetTensorImpl()) ? cut : whole).push_back(detail::norm_share(p.grad(), norm_type));
    // Every slice is held by world / tp ranks, every whole tensor by all.
    const double copies = static_cast<double>(comm().world_size()) / options_.tp_size();
    const auto total = detail::tensor_parallel_norm(comm(), cut, whole, norm_type, copies, options_.tp_size());
    return detail::clip_to_norm(total, max_norm, norm_type, parameters);
  }

  // Checkpoints. Beside tensor parallelism full_state joins the tp group's slices (a collective:
  // every rank calls it) and load_full_state takes each rank's slices of a full state.
  std::vector<std::pair<std::string, at::Tensor>> full_state(const torch::nn::Module& module) {
    auto state = ReplicatedModel::full_state(module);
    if (options_.tp_size() > 1) detail::join_split_tensors(state, nn::split_tensors(module), comm().device());
    return state;
  }
  void load_full_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state) {
    if (options_.tp_size() == 1) return ReplicatedModel::load_full_state(module, state);
    detail::check_state_fits(full_state(module), state);
    ReplicatedModel::load_full_state(module, detail::slice_split_tensors(state, nn::split_tensors(module)));
  }

  // The ranks of a tensor-parallel group: they read the same batches.
  int tensor_parallel_size() const { return static_cast<int>(options_.tp_size()); }

  Comm& comm() { return group_.comm(); }
  // What gradients are averaged over: the world, or beside tensor parallelism the ranks that hold
  // this rank's slices.
  Comm& data_comm() { return data_ ? *data_ : comm(); }
  // The communication hook, with whatever state it keeps.
  Hook& hook() { return hook_; }

  // Collectives started so far by the buckets of the models prepared now (for tests and benchmarks).
  int64_t gradient_collectives() const {
    int64_t count = 0;
    for (const auto& b : buckets_) count += b.buckets->collectives_started();
    return count;
  }
  // The parameters' names, bucket by bucket, of every prepared model (the order buckets start in).
  std::vector<std::vector<std::string>> bucket_parameters() const {
    std::vector<std::vector<std::string>> layout;
    for (const auto& b : buckets_)
      for (auto& bucket : b.buckets->bucket_parameters()) layout.push_back(std::move(bucket));
    return layout;
  }
  std::size_t bucket_count() const {
    std::size_t count = 0;
    for (const auto& b : buckets_) count += b.buckets->bucket_count();
    return count;
  }

 private:
  DDPOptions options_;
  detail::ProcessGroup<Comm> group_;
  std::optional<Comm> data_;
  Hook hook_;
  std::size_t next_bucket_index_ = 0;
  struct ModelBuckets {
    std::weak_ptr<torch::nn::Module> model;
    std::unique_ptr<detail::GradientBuckets<Comm, Hook>> buckets;
    std::vector<at::Tensor> cut;  // its parameters tensor parallelism split, kept alive for sliced_
  };
  // The prepared models' cut parameters, found when the buckets change (for clip_grad_norm_).
  std::unordered_set<const c10::TensorImpl*> sliced_;
  void find_sliced() {
    sliced_.clear();
    for (const auto& b : buckets_)
      for (const auto& t : b.cut) sliced_.insert(t.unsafeGetTensorImpl());
  }
  std::vector<ModelBuckets> buckets_;
};

// Several processes on CPUs, over Gloo.
using CPU = DDP<Gloo>;

}  // namespace acc
