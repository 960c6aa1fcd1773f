// FSDP<Comm, Sharding>: fully sharded data parallelism. The model is split into units (see
// include/acc/fsdp/unit.hpp for how C++ code declares them): each unit's parameters are flattened
// and sharded across ranks (fsdp/flat_unit.hpp), gathered just before the unit computes and
// freed after, gradients reduce-scattered, and the optimizer steps only this rank's shards. Which
// modules become units:
//   - the whole model, always (the parameters no other unit takes);
//   - modules declared with acc::Unit, and the children of a model that is a torch::nn::Sequential,
//     filtered by FSDPOptions::auto_wrap_policy (the YAML's fsdp_auto_wrap_policy): all of them,
//     those whose class is in transformer_layer_cls_to_wrap, those with min_num_params or more,
//     or none. A class named for wrapping that is not declared is an error saying how to declare it.
// A nested unit's parameters belong to the innermost unit. With a hybrid sharding policy the units
// are sharded over a shard group (fsdp/shard_groups.hpp) and their shards' gradients averaged
// across the groups. Beside tensor parallelism (FSDPOptions::tp_size) the model is one that
// acc::tp::parallelize split over groups of tp_size consecutive ranks, the units shard over the
// ranks that hold the same slices, and full_state joins the slices. With
// FSDPOptions::cpu_ram_efficient_loading only rank 0 needs real weights: the others may build the
// model inside acc::init_empty_weights() and get their shards from it.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/gloo.hpp>
#include <acc/comm/nccl.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/flat_unit.hpp>
#include <acc/fsdp/options.hpp>
#include <acc/fsdp/shard_groups.hpp>
#include <acc/fsdp/sharding.hpp>
#include <acc/fsdp/unit.hpp>
#include <acc/fsdp/unit_registry.hpp>
#include <acc/nn/split_layers.hpp>
#include <acc/strategy/process_group.hpp>
#include <acc/strategy/tensor_parallel.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/ops/stack.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace acc {

// What one rank holds of the model's parameters and gradients (for tests and benchmarks).
struct FSDPMemory {
  std::size_t shard_bytes = 0;          // this rank's parameter shards
  std::size_t shard_grad_bytes = 0;     // their gradients
  std::size_t gathered_bytes_held = 0;  // full parameters gathered right now
  std::size_t largest_unit_bytes = 0;   // the largest unit's full parameters
  std::size_t root_unit_bytes = 0;      // the whole model's own unit (parameters of no other)
  std::size_t peak_gathered_bytes = 0;  // most full parameters held at once since reset_peak()
};

// What one rank's units gave their collectives since prepare (for benchmarks and tests of hybrid
// sharding: under HYBRID_SHARD only `replicas` crosses machines).
using FSDPTraffic = detail::CollectiveBytes;

template <class Comm, class Sharding = FullShard>
class FSDP {
  static_assert(is_sharding_policy_v<Sharding>,
                "FSDP's second parameter must be a sharding policy: acc::FullShard, acc::ShardGradOp, acc::NoShard, "
                "acc::HybridShard or acc::HybridShardZero2 (include/acc/fsdp/sharding.hpp)");
  static constexpr bool on_cpu = Comm::device_type == c10::DeviceType::CPU;

 public:
  using sharding = Sharding;
  static constexpr std::string_view name = "FSDP";
  // Every rank's optimizer state over its flat shards (with NO_SHARD: over whole flattened units).
  static constexpr std::string_view checkpoint_layout = Sharding::shards_parameters ? "flat_shards" : "flat_units";
  using options_type = std::tuple<FSDPOptions, ProcessGroupOptions>;

  // distributed_type FSDP, its sharding strategy (fsdp_sharding_strategy, or FSDP2's spelling,
  // see fsdp_sharding_strategy), and use_cpu where Comm's tensors live.
  template <class Config>
  static bool matches(const Config& config) {
    return config.distributed_type == name && fsdp_sharding_strategy(config) == Sharding::name &&
           config.use_cpu == on_cpu;
  }
  static std::string spelling() {
    return std::string(name) + " fsdp_sharding_strategy=" + std::string(Sharding::name) +
           (on_cpu ? " use_cpu=true" : " use_cpu=false");
  }

  FSDP(FSDPOptions options, ProcessGroupOptions process_group)
      : options_(std::move(options)), group_("FSDP<" + std::string(Comm::name) + ">", std::move(process_group)) {}
  FSDP(const FSDP&) = delete;
  FSDP& operator=(const FSDP&) = delete;
  ~FSDP() { release(); }

  c10::Device device(const ProcessEnvironment& env, bool force_cpu) {
    // A bad shard group or tensor-parallel size fails on every rank before any rank connects: a
    // rank that failed after connecting would close its connections under peers still making theirs.
    const auto shape = detail::fsdp_mesh_shape(options_, Sharding::replicates, env.world_size, env.local_world_size);
    const auto device = group_.join(env, force_cpu);
    groups_.emplace(env, group_.options(), shape, comm());
    return device;
  }

  // Mixed precision: the dtype units are gathered in (their shards stay in the parameters' dtype).
  void compute_dtype(std::optional<at::ScalarType> dtype) { compute_dtype_ = dtype; }

  void prepare_model(const std::shared_ptr<torch::nn::Module>& module, c10::Device device) {
    if (!units_.empty())
      throw Error(
          "FSDP prepares one model per Accelerator; prepare() was given a second one (call "
          "accelerator.free_memory() first to leave the first one and prepare another)");
    const auto split = nn::split_tensors(*module);
    check_split(*module, split);
    // With rank-0 loading the units take rank 0's values one at a time (the other ranks' models
    // may be empty); otherwise every rank's model moves whole, then rank 0's state goes to all.
    const auto empty_ranks = detail::ranks_with_empty_models(comm(), *module, "FSDP");
    const bool from_rank0 = options_.cpu_ram_efficient_loading();
    if (!empty_ranks.empty() && !from_rank0)
      throw Error("FSDP: the model on " + detail::ranks_text(empty_ranks) +
                  " has tensors on the meta device (built inside acc::init_empty_weights()); FSDP fills such a "
                  "model from rank 0 only with rank-0 loading: set fsdp_cpu_ram_efficient_loading: true in the "
                  "config (FSDPOptions().cpu_ram_efficient_loading(true)), or load the weights on every rank "
                  "before prepare (acc::load_checkpoint_in_model)");
    if (from_rank0) {
      detail::move_real_tensors(*module, device);
    } else {
      module->to(device);
      if (options_.sync_module_states()) {
        // From the first rank of each shard group, then of each replica group: every rank ends
        // with rank 0's values, or with tensor parallelism its tp group's first rank's.
        detail::broadcast_module_state(shard_comm(), *module);
        if (auto* replicas = groups_ ? groups_->replicas() : nullptr)
          detail::broadcast_module_state(*replicas, *module);
      }
    }
    // Units: the chosen modules by qualified name; each trained parameter goes to the innermost.
    const auto chosen = choose_units(*module, detail::is_sequential(*module));
    std::vector<std::vector<std::pair<std::string, at::Tensor>>> members(chosen.size() + 1);
    for (const auto& p : module->named_parameters()) {
      if (!p.value().requires_grad()) continue;  // frozen: stays replicated, as it is
      std::size_t owner = 0, depth = 0;
      for (std::size_t i = 0; i < chosen.size(); ++i) {
        const auto& prefix = chosen[i].first;
        if (p.key().rfind(prefix + ".", 0) == 0 && prefix.size() + 1 > depth) {
          owner = i + 1;
          depth = prefix.size() + 1;
        }
      }
      members[owner].emplace_back(p.key(), p.value());
    }
    const detail::FlatUnitSettings settings{
        Sharding::shards_parameters,
        compute_dtype_.value_or(module->parameters().empty() ? at::kFloat : module->parameters().front().scalar_type()),
        options_.offload_params(), options_.reduce_dtype()};
    for (std::size_t i = 0; i <= chosen.size(); ++i) {
      if (members[i].empty()) continue;
      UnitState unit;
      unit.module = i == 0 ? nullptr : chosen[i - 1].second;
      // Rank 0 of the whole job, not of a shard group, holds the values.
      unit.flat = std::make_unique<detail::FlatUnit<Comm>>(
          i == 0 ? "(model)" : chosen[i - 1].first, members[i], shard_comm(), settings,
          groups_ ? groups_->replicas() : nullptr, from_rank0 ? &comm() : nullptr);
      units_.push_back(std::move(unit));
    }
    if (from_rank0) {  // what no unit holds: frozen parameters and buffers
      std::vector<at::Tensor> rest;
      for (const auto& p : module->parameters())
        if (!unit_of(p)) rest.push_back(p);
      for (const auto& b : module->buffers()) rest.push_back(b);
      detail::broadcast_each_from_rank0(comm(), rest, device);
    }
    for (std::size_t i = 0; i < units_.size(); ++i) {
      units_[i].flat->on_gradient([this, i](std::size_t) { gradient_ready(i); });
      if (units_[i].module) {
        units_[i].hooks = std::make_unique<ChildHooks>(this, i);
        detail::UnitRegistry::instance().install(*units_[i].module, units_[i].hooks.get());
      }
    }
    root_ = units_.empty() || units_.front().module ? std::nullopt : std::optional<std::size_t>(0);
    split_ = split;
    if (!split_.empty()) find_cut_elements();
  }

  // Accelerator::free_memory: the model's units (their shards and gathered parameters) go.
  void release() {
    for (auto& unit : units_)
      if (unit.module) detail::UnitRegistry::instance().install(*unit.module, nullptr);
    units_.clear();
    split_.clear();
    cut_elements_.clear();
    root_.reset();
    forward_order_.clear();
    previous_order_.clear();
  }

  // The model's forward: the root unit's parameters are gathered first; a Sequential model's
  // children are called one by one so that those that are units gather and free around their call.
  template <class Holder, class... Args>
  auto forward(Holder& module, Args&&... args) {
    forward_order_.clear();
    if (root_) units_[*root_].flat->gather();
    note_gathered();
    if constexpr (detail::is_sequential_v<Holder>)
      return detail::forward_sequential(module, std::forward<Args>(args)...);
    else
      return module->forward(std::forward<Args>(args)...);
  }

  void backward(const at::Tensor& loss) {
    loss.backward();
    synchronize_gradients();
  }

  // Reduces what backward left (units with parameters that got no gradient), waits for the
  // reductions and frees the gathered parameters. Idempotent.
  void synchronize_gradients() {
    if (sync_) {
      for (auto it = units_.rbegin(); it != units_.rend(); ++it)
        if (!it->flat->reducing() && it->flat->has_local_gradients()) it->flat->reduce_gradients_async();
      for (auto& unit : units_) unit.flat->finish_gradients();
    }
    for (auto& unit : units_) {
      unit.ready = 0;
      unit.flat->release();
    }
  }

  void set_gradient_sync(bool enabled) { sync_ = enabled; }

  template <class Optimizer>
  void zero_grad(Optimizer& optimizer) {
    group_.drop_gradients(optimizer);
  }

  // The optimizer was made with the model's parameters: it gets the shards of their units
  // instead, each once, in the group of its unit's parameters.
  void prepare_optimizer(torch::optim::Optimizer& optimizer) {
    if (!optimizer.state().empty())
      throw Error(
          "the optimizer given to prepare() has already stepped; FSDP needs a fresh one (its state is "
          "sharded at prepare)");
    std::vector<int> group_of_unit(units_.size(), -1);
    auto& groups = optimizer.param_groups();
    for (std::size_t g = 0; g < groups.size(); ++g) {
      std::vector<at::Tensor> shards;
      for (const auto& p : groups[g].params()) {
        const auto u = unit_of(p);
        if (!u) {
          shards.push_back(p);  // frozen or not part of the model: left alone
          continue;
        }
        if (group_of_unit[*u] == static_cast<int>(g)) continue;
        if (group_of_unit[*u] != -1)
          throw Error("FSDP unit '" + units_[*u].flat->name() +
                      "' has parameters in two optimizer parameter groups; a unit's flattened shard steps in one "
                      "group: give all parameters of a unit the same group, or make the unit smaller");
        group_of_unit[*u] = static_cast<int>(g);
        shards.push_back(units_[*u].flat->shard());
      }
      groups[g].params() = shards;
    }
  }

  // The tensors the optimizer steps (for unscaling and clipping their gradients).
  std::vector<at::Tensor> trained_parameters() {
    std::vector<at::Tensor> shards;
    for (auto& unit : units_) shards.push_back(unit.flat->shard());
    return shards;
  }

  // Clips the gradients by their norm over all shards of all ranks; returns that norm.
  double clip_grad_norm_(double max_norm, double norm_type) {
    const at::Tensor total = split_.empty() ? shards_norm(norm_type) : split_norm(norm_type);
    return detail::clip_to_norm(total, max_norm, norm_type, trained_parameters());
  }

  // The ranks of a tensor-parallel group beside FSDP: they read the same batches.
  int tensor_parallel_size() const { return static_cast<int>(options_.tp_size()); }

  Comm& comm() { return group_.comm(); }
  // The ranks units are sharded over: every rank, or this rank's shard group (hybrid sharding, or
  // beside tensor parallelism the ranks that hold this rank's slices).
  Comm& shard_comm() { return groups_ ? groups_->shard() : comm(); }

  // Checkpoints. full_state gathers every unit into host memory, one after the other (a
  // collective: all ranks call it); load_full_state takes each rank's slices of a full state.
  std::vector<std::pair<std::string, at::Tensor>> full_state(const torch::nn::Module& module) {
    std::map<std::string, at::Tensor> gathered;
    for (auto& unit : units_)
      for (auto& [param_name, value] : unit.flat->full_parameters()) gathered[param_name] = value;
    auto state = detail::module_state(module);  // frozen parameters and buffers as they are
    for (auto& [entry_name, value] : state) {
      const auto found = gathered.find(entry_name);
      if (found != gathered.end()) value = found->second;
    }
    detail::join_split_tensors(state, split_, comm().device());  // tensor parallelism's slices
    return state;
  }
  void load_full_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state) {
    auto own = full_state(module);
    detail::check_state_fits(own, state);
    const auto local = detail::slice_split_tensors(state, split_);  // tensor parallelism's slices
    at::NoGradGuard no_grad;
    for (auto& unit : units_) unit.flat->load_full_parameters(local);
    for (const auto& p : module.named_parameters())
      if (!unit_of(p.value())) p.value().copy_(local.at(p.key()));
    for (const auto& b : module.named_buffers()) b.value().copy_(local.at(b.key()));
  }

  // This rank's shards, one entry per unit ("<unit>.flat_shard"), as a SHARDED_STATE_DICT
  // checkpoint keeps them, and loading them back into the same units on the same world size.
  std::vector<std::pair<std::string, at::Tensor>> sharded_state() {
    std::vector<std::pair<std::string, at::Tensor>> state;
    for (auto& unit : units_) state.emplace_back(unit.flat->name() + ".flat_shard", unit.flat->shard().detach());
    return state;
  }
  // Where each unit's parameters lie in its shards (the layout a SHARDED_STATE_DICT file records).
  std::vector<detail::FlatUnitLayout> sharded_layout() const {
    std::vector<detail::FlatUnitLayout> layouts;
    for (const auto& unit : units_) layouts.push_back(unit.flat->layout());
    return layouts;
  }
  // Whether save_state writes sharded_state() (fsdp_state_dict_type SHARDED_STATE_DICT) rather
  // than the gathered full state.
  bool sharded_checkpoints() const { return options_.state_dict_type() == FSDPOptions::StateDictType::sharded; }
  void load_sharded_state(const std::map<std::string, at::Tensor>& state) {
    for (auto& unit : units_) {
      const auto key = unit.flat->name() + ".flat_shard";
      const auto found = state.find(key);
      if (found == state.end())
        throw Error("the sharded state has no entry '" + key + "' for FSDP unit '" + unit.flat->name() +
                    "'; it was saved from a model with other units");
      if (found->second.numel() != unit.flat->shard_numel())
        throw Error("the sharded state's '" + key + "' has " + std::to_string(found->second.numel()) +
                    " elements but this rank's shard has " + std::to_string(unit.flat->shard_numel()) +
                    ": it was saved with another number of processes; resume with the same number, or save a "
                    "FULL_STATE_DICT, which loads on any");
    }
    at::NoGradGuard no_grad;
    for (auto& unit : units_) {
      unit.flat->shard().detach().copy_(state.at(unit.flat->name() + ".flat_shard"));
      unit.flat->release();  // a gathered copy is stale now
    }
  }

  // --- Introspection (tests, benchmarks).
  std::vector<std::string> unit_names() const {
    std::vector<std::string> names;
    for (const auto& unit : units_) names.push_back(unit.flat->name());
    return names;
  }
  FSDPMemory memory() const {
    FSDPMemory m;
    for (const auto& unit : units_) {
      const auto& shard = unit.flat->shard();
      m.shard_bytes += shard.nbytes();
      if (shard.grad().defined()) m.shard_grad_bytes += shard.grad().nbytes();
      m.gathered_bytes_held += unit.flat->gathered_bytes_held();
      if (unit.module)
        m.largest_unit_bytes = std::max(m.largest_unit_bytes, unit.flat->gathered_bytes());
      else
        m.root_unit_bytes = unit.flat->gathered_bytes();
    }
    m.peak_gathered_bytes = peak_gathered_bytes_;
    return m;
  }
  void reset_peak() { peak_gathered_bytes_ = 0; }
  FSDPTraffic traffic() const {
    FSDPTraffic total;
    for (const auto& unit : units_) {
      total.shard_group += unit.flat->traffic().shard_group;
      total.replicas += unit.flat->traffic().replicas;
    }
    return total;
  }

 private:
  // Without tensor parallelism: each element of the model once in the shard group (replicas hold
  // the same shards; without sharding every rank holds everything). The p-th power of the norm, or
  // the largest magnitude.
  at::Tensor shards_norm(double norm_type) {
    const bool infinity = std::isinf(norm_type);
    std::vector<at::Tensor> norms;
    for (auto& unit : units_)
      if (unit.flat->shard().grad().defined()) norms.push_back(unit.flat->shard().grad().norm(norm_type));
    // The shards' gradients may be in host memory (offload); the collective needs the comm's device.
    const at::Tensor local = norms.empty() ? at::zeros({1}, at::TensorOptions(comm().device()))
                                           : at::stack(norms).to(comm().device(), at::kFloat);
    at::Tensor total = infinity ? local.max().reshape({1}) : local.pow(norm_type).sum().reshape({1});
    if (Sharding::shards_parameters) shard_comm().all_reduce(total, infinity ? ReduceOp::max : ReduceOp::sum);
    return total;
  }

  // Beside tensor parallelism the shards mix the tensors it cut (each tp rank holds a different
  // slice) with those it left whole (every tp rank holds the same): each rank sums the two kinds of
  // its shards' elements apart, the world's sums count a cut element once per copy of its shard
  // (its replicas, and unsharded every rank of its shard group) and a whole one tp_size times as
  // often. The p-th power of the norm, or the largest magnitude.
  at::Tensor split_norm(double norm_type) {
    std::vector<at::Tensor> cut, whole;
    for (std::size_t u = 0; u < units_.size(); ++u) {
      const auto& grad = units_[u].flat->shard().grad();
      if (!grad.defined()) continue;
      for (const auto& run : cut_elements_[u]) {
        const auto part = grad.narrow(0, run.begin, run.length);
        (run.cut ? cut : whole).push_back(detail::norm_share(part, norm_type));
      }
    }
    const double copies = static_cast<double>(comm().world_size()) / options_.tp_size() /
                          (Sharding::shards_parameters ? shard_comm().world_size() : 1);
    return detail::tensor_parallel_norm(comm(), cut, whole, norm_type, copies, options_.tp_size());
  }

  // Where this rank's shard of each unit holds elements of tensors tensor parallelism cut and of
  // those it left whole (for split_norm, found once at prepare).
  void find_cut_elements() {
    cut_elements_.clear();
    for (const auto& unit : units_) {
      const auto layout = unit.flat->layout();
      const int64_t first = layout.index * layout.shard_numel, last = first + unit.flat->shard().numel();
      auto& runs = cut_elements_.emplace_back();
      for (const auto& member : layout.members) {
        const int64_t begin = std::max(first, member.offset), end = std::min(last, member.offset + member.numel);
        if (begin < end) runs.push_back({begin - first, end - begin, split_.count(member.name) > 0});
      }
    }
  }

  // A model tensor parallelism split shards over the ranks that hold the same slices: its groups
  // must be the tp_size consecutive ranks the shard groups leave out, its values each rank's own.
  void check_split(const torch::nn::Module& module, const std::map<std::string, nn::SplitTensor>& split) {
    detail::check_tensor_parallel_split(module, split, options_.tp_size(), comm().rank(), "FSDP", "FSDPOptions",
                                        "shards over");
    if (split.empty()) return;
    for (const auto& [name, tensor] : split)
      if (tensor.split->sequence_parallel())
        throw Error("FSDP: '" + name +
                    "' is sequence-parallel, and the LayerNorms beside it sum their gradients over the tp group by "
                    "hooks on the parameter tensors, which FSDP replaces by its flat shards; leave "
                    "sequence_parallel() out of the plan, or use DDP told the tp size (DDPOptions::tp_size)");
    if (sharded_checkpoints())
      for (const auto& p : module.named_parameters())
        if (!p.value().requires_grad() && split.count(p.key()))
          throw Error("FSDP: '" + p.key() +
                      "' is cut by tensor parallelism and frozen, and a SHARDED_STATE_DICT checkpoint keeps the "
                      "parameters of no unit from rank 0 alone; save FULL_STATE_DICT (fsdp_state_dict_type), or train "
                      "it");
    if (options_.cpu_ram_efficient_loading())
      throw Error(
          "FSDP's rank-0 loading (fsdp_cpu_ram_efficient_loading) gives every rank rank 0's values, but the ranks of "
          "a tensor-parallel group hold different slices; load the weights on every rank before acc::tp::parallelize "
          "and leave rank-0 loading off");
  }

  struct ChildHooks final : detail::UnitHooks {
    ChildHooks(FSDP* owner, std::size_t index) : owner(owner), index(index) {}
    void before_forward() override { owner->before_unit_forward(index); }
    void after_forward(const std::vector<at::Tensor>& outputs) override { owner->after_unit_forward(index, outputs); }
    FSDP* owner;
    std::size_t index;
  };
  struct UnitState {
    std::shared_ptr<torch::nn::Module> module;  // null for the root
    std::unique_ptr<detail::FlatUnit<Comm>> flat;
    std::unique_ptr<ChildHooks> hooks;
    std::size_t ready = 0;  // parameters whose gradient arrived in this backward
  };

  // Class names match with or without namespace and libtorch's "Impl" suffix.
  static bool class_matches(const torch::nn::Module& module, const std::vector<std::string>& classes) {
    auto bare = module.name();
    if (const auto colon = bare.rfind("::"); colon != std::string::npos) bare = bare.substr(colon + 2);
    const auto without_impl =
        bare.size() > 4 && bare.compare(bare.size() - 4, 4, "Impl") == 0 ? bare.substr(0, bare.size() - 4) : bare;
    return std::any_of(classes.begin(), classes.end(),
                       [&](const std::string& c) { return c == module.name() || c == bare || c == without_impl; });
  }

  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> choose_units(torch::nn::Module& root,
                                                                                       bool sequential_root) {
    using AutoWrap = FSDPOptions::AutoWrap;
    const auto policy = options_.auto_wrap_policy();
    std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> chosen;
    if (policy == AutoWrap::no_wrap) return chosen;
    const auto& classes = options_.transformer_layer_cls_to_wrap();
    if (policy == AutoWrap::transformer_based && classes.empty())
      throw Error(
          "fsdp_auto_wrap_policy is TRANSFORMER_BASED_WRAP but fsdp_transformer_layer_cls_to_wrap is empty; "
          "name the block class(es) to wrap, e.g. fsdp_transformer_layer_cls_to_wrap: Block");
    bool any_match = false;
    std::string seen;
    for (const auto& item : root.named_modules("", /*include_self=*/false)) {
      const auto& module = item.value();
      const bool callable = detail::UnitRegistry::instance().is_declared(*module) ||
                            (sequential_root && item.key().find('.') == std::string::npos);
      if (seen.find(" " + module->name() + ",") == std::string::npos) seen += " " + module->name() + ",";
      bool wanted = callable;
      if (policy == AutoWrap::transformer_based) {
        wanted = class_matches(*module, classes);
        any_match = any_match || wanted;
        if (wanted && !callable)
          throw Error("module '" + item.key() + "' (" + module->name() +
                      ") is of a class named in fsdp_transformer_layer_cls_to_wrap, but C++ modules have no forward "
                      "hooks, so FSDP cannot gather its parameters when it runs: declare it as an FSDP unit by "
                      "holding and calling it through acc::Unit<...> (include/acc/fsdp/unit.hpp), or make the "
                      "model a torch::nn::Sequential of such modules");
      } else if (policy == AutoWrap::size_based) {
        int64_t count = 0;
        for (const auto& p : module->parameters()) count += p.numel();
        wanted = callable && count >= options_.min_num_params();
      }
      if (wanted) chosen.emplace_back(item.key(), module);
    }
    if (policy == AutoWrap::transformer_based && !any_match) {
      std::string wanted_names;
      for (const auto& c : classes) wanted_names += (wanted_names.empty() ? "" : ", ") + c;
      throw Error("fsdp_transformer_layer_cls_to_wrap names " + wanted_names +
                  " but no module of the model has that class; its classes are:" + seen.substr(0, seen.size() - 1));
    }
    return chosen;
  }

  std::optional<std::size_t> unit_of(const at::Tensor& param) const {
    for (std::size_t i = 0; i < units_.size(); ++i)
      if (units_[i].flat->owns(param)) return i;
    return std::nullopt;
  }

  // The unit after `index` in the last forward's order (+1) or before it (-1).
  std::optional<std::size_t> neighbour(std::size_t index, int step) const {
    const auto& order = previous_order_;
    const auto at = std::find(order.begin(), order.end(), index);
    if (at == order.end()) return std::nullopt;
    const auto position = (at - order.begin()) + step;
    if (position < 0 || position >= static_cast<std::ptrdiff_t>(order.size())) return std::nullopt;
    return order[static_cast<std::size_t>(position)];
  }

  void before_unit_forward(std::size_t index) {
    forward_order_.push_back(index);
    units_[index].flat->gather();
    if (options_.forward_prefetch())
      if (const auto next = neighbour(index, +1)) units_[*next].flat->gather_async();
    note_gathered();
  }

  void after_unit_forward(std::size_t index, const std::vector<at::Tensor>& outputs) {
    if (forward_order_.size() == units_.size() - (root_ ? 1 : 0)) previous_order_ = forward_order_;
    if (!Sharding::reshard_after_forward) return;
    units_[index].flat->release();
    // Before this unit's backward its parameters are needed again: gather them when the first
    // gradient reaches one of its outputs.
    for (const auto& output : outputs)
      if (output.defined() && output.requires_grad())
        const_cast<at::Tensor&>(output).register_hook([this, index](const at::Tensor& grad) {
          before_unit_backward(index);
          return grad;
        });
  }

  void before_unit_backward(std::size_t index) {
    units_[index].flat->gather();
    if (options_.backward_prefetch() == FSDPOptions::BackwardPrefetch::backward_pre)
      if (const auto previous = neighbour(index, -1)) units_[*previous].flat->gather_async();
    note_gathered();
  }

  void note_gathered() {
    std::size_t held = 0;
    for (const auto& unit : units_) held += unit.flat->gathered_bytes_held();
    peak_gathered_bytes_ = std::max(peak_gathered_bytes_, held);
  }

  void gradient_ready(std::size_t index) {
    if (!sync_) return;
    auto& unit = units_[index];
    if (++unit.ready < unit.flat->size()) return;
    unit.flat->reduce_gradients_async();
    // The reductions started before this one have had a unit's backward to finish: finishing them
    // now gives their full gradients' memory back during backward, not at its end.
    for (std::size_t other = 0; other < units_.size(); ++other)
      if (other != index && units_[other].flat->reducing()) units_[other].flat->finish_gradients();
    if (Sharding::shards_parameters && unit.module) unit.flat->release();
    if (options_.backward_prefetch() == FSDPOptions::BackwardPrefetch::backward_post && unit.module)
      if (const auto previous = neighbour(index, -1)) units_[*previous].flat->gather_async();
  }

  FSDPOptions options_;
  detail::ProcessGroup<Comm> group_;
  std::optional<detail::ShardGroups<Comm>> groups_;
  // The model's tensors that tensor parallelism cut (empty without it), and per unit the runs of
  // this rank's shard that hold them or the tensors it left whole.
  std::map<std::string, nn::SplitTensor> split_;
  struct ElementRun {
    int64_t begin = 0, length = 0;
    bool cut = false;
  };
  std::vector<std::vector<ElementRun>> cut_elements_;
  std::optional<at::ScalarType> compute_dtype_;
  std::vector<UnitState> units_;
  std::optional<std::size_t> root_;
  std::vector<std::size_t> forward_order_, previous_order_;
  bool sync_ = true;
  std::size_t peak_gathered_bytes_ = 0;
};

}  // namespace acc
