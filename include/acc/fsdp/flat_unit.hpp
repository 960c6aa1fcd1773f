// One FSDP unit: its parameters flattened into one buffer, padded to a multiple of the world size
// and split evenly; each rank keeps its slice (the shard, which the optimizer steps). Before the
// unit computes, the shards are all-gathered into a full buffer in the compute dtype, of which the
// module's parameters are views; afterwards that buffer's storage is given back (its views stay
// valid and see the next gather's memory, as PyTorch's FSDP does with its flat parameter). When
// all gradients of the unit are accumulated, they are flattened and reduce-scattered, on a side
// stream with NCCL, into the shard's gradient. With offload, shards and their gradients live in
// the host's (pinned) memory and the optimizer steps them there; only gathered units and the
// gradients being reduced take GPU memory.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/comm/comm.hpp>
#include <acc/error.hpp>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StorageImpl.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace acc::detail {

// How a unit keeps its parameters between uses.
struct FlatUnitSettings {
  bool shard = true;                           // false: NO_SHARD, every rank holds all of it
  at::ScalarType compute_dtype = at::kFloat;   // what forward and backward see (bf16/fp16 gathers)
  bool offload = false;                        // shards and their gradients in host memory
  std::optional<at::ScalarType> reduce_dtype;  // gradients are averaged in; unset: the shard's dtype
};

// Where a unit's parameters lie in its flat buffer and how the buffer is split: what a
// SHARDED_STATE_DICT checkpoint records to rebuild the full tensors from the shards, and what any
// checkpoint records to deal the optimizer's state of the shards out to another number of ranks.
struct FlatUnitLayout {
  struct Member {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0, numel = 0;
  };
  std::string name;
  at::ScalarType dtype = at::kFloat;
  int64_t shards = 1;  // ranks the buffer is split over (1: NO_SHARD, each holds it all)
  int64_t padded_numel = 0, shard_numel = 0;
  std::vector<Member> members;
  int64_t numel = 0;  // the members' elements: padded_numel without the padding
  int64_t index = 0;  // this rank's shard, [index * shard_numel, (index + 1) * shard_numel)
};

// The bytes a unit's collectives carry (each collective's full buffer: an all-gather's output, a
// reduce-scatter's input, an all-reduce's tensor), by the group they run in: the ranks the unit is
// sharded over, and under hybrid sharding the replicas of its shard in the other shard groups.
struct CollectiveBytes {
  std::size_t shard_group = 0;
  std::size_t replicas = 0;
};

template <class Comm>
class FlatUnit {
 public:
  // Sharded over `comm`'s ranks; with `replicas` (hybrid sharding) the shard's gradient is also
  // averaged with the ranks that hold the same shard in the other shard groups. With
  // `values_from_rank0_of`, the unit's values are those of that communicator's rank 0, broadcast
  // into its device (FSDPOptions::cpu_ram_efficient_loading): the other ranks' parameters may be
  // meta tensors, and get their storage here. Either way the unit's full flat copy lasts only until
  // this rank's shard is cut from it.
  FlatUnit(std::string name, const std::vector<std::pair<std::string, at::Tensor>>& parameters, Comm& comm,
           FlatUnitSettings settings, Comm* replicas = nullptr, Comm* values_from_rank0_of = nullptr)
      : name_(std::move(name)), comm_(comm), replicas_(replicas), settings_(settings) {
    const auto& first = parameters.front().second;
    const auto options = first.options().device(values_from_rank0_of ? values_from_rank0_of->device() : first.device());
    for (const auto& [param_name, tensor] : parameters) {
      if (tensor.scalar_type() != first.scalar_type())
        throw Error("FSDP unit '" + name_ + "' mixes parameter dtypes (" + param_name + " is " +
                    c10::toString(tensor.scalar_type()) + ", " + parameters.front().first + " is " +
                    c10::toString(first.scalar_type()) + "); give the unit parameters of one dtype");
      members_.push_back(Member{param_name, tensor, total_, tensor.numel()});
      total_ += tensor.numel();
    }
    const int64_t world = comm_.world_size();
    shard_numel_ = settings_.shard ? (total_ + world - 1) / world : total_;
    padded_ = settings_.shard ? shard_numel_ * world : total_;

    at::NoGradGuard no_grad;
    {
      auto flat = at::empty({padded_}, options);
      if (padded_ > total_) flat.narrow(0, total_, padded_ - total_).zero_();
      if (!values_from_rank0_of || values_from_rank0_of->rank() == 0)
        for (const auto& m : members_) flat.narrow(0, m.offset, m.numel).copy_(m.param.reshape({-1}));
      if (values_from_rank0_of) values_from_rank0_of->broadcast(flat, 0);
      shard_ = settings_.shard ? flat.narrow(0, comm_.rank() * shard_numel_, shard_numel_).clone() : flat;
    }  // the full copy goes before the gathered buffer comes
    if (settings_.offload && !shard_.is_cpu()) shard_ = shard_.to(at::kCPU).pin_memory();  // pinned: async copies
    shard_.set_requires_grad(true);
    // NO_SHARD in the parameters' own dtype computes on the shard itself; otherwise a buffer.
    aliased_ =
        !settings_.shard && settings_.compute_dtype == shard_.scalar_type() && shard_.device() == options.device();
    gathered_ = aliased_ ? shard_.detach() : at::empty({padded_}, options.dtype(settings_.compute_dtype));
    gathered_bytes_ = gathered_.nbytes();
    for (auto& m : members_) {
      const auto shape = m.param.sizes().vec();
      assign_in_place(m.param, gathered_.narrow(0, m.offset, m.numel).view(shape));
      // The accumulator exists from here on: the dtype above no longer changes.
      m.accumulator = torch::autograd::impl::grad_accumulator(m.param);
      if (!m.accumulator)
        throw Error("parameter '" + m.name + "' has no gradient accumulator (is it a view of another tensor?)");
    }
    if (aliased_)
      is_gathered_ = true;
    else
      release();
  }
  FlatUnit(const FlatUnit&) = delete;
  FlatUnit& operator=(const FlatUnit&) = delete;
  ~FlatUnit() {
    for (auto& m : members_)
      if (m.hook) m.accumulator->del_post_hook(m.hook);
  }

  // Calls ready(member index) after each parameter's gradient is accumulated.
  template <class Ready>
  void on_gradient(Ready ready) {
    for (std::size_t i = 0; i < members_.size(); ++i)
      members_[i].hook = members_[i].accumulator->add_post_hook(std::make_unique<Hook<Ready>>(ready, i));
  }

  // --- Parameters.

  // Starts bringing the full parameters in (no-op when they are there or on their way).
  void gather_async() {
    if (is_gathered_) return;
    is_gathered_ = true;
    allocate_gathered();
    at::NoGradGuard no_grad;
    if (settings_.shard) {
      traffic_.shard_group += gathered_bytes_;
      gather_input_ = shard_.detach().to(gathered_.device(), settings_.compute_dtype, /*non_blocking=*/true);
      pending_gather_.emplace(comm_.all_gather_into_async(gathered_, gather_input_));
    } else {
      gathered_.copy_(shard_.detach(), /*non_blocking=*/true);
    }
  }
  // The full parameters, ready to compute with on the caller's stream.
  void gather() {
    gather_async();
    if (pending_gather_) {
      pending_gather_->wait();
      pending_gather_.reset();
      gather_input_ = at::Tensor();
    }
  }
  // Gives the full parameters' memory back (sharded units), or marks a low-precision copy stale.
  void release() {
    if (aliased_) return;
    if (pending_gather_) gather();
    is_gathered_ = false;
    if (!settings_.shard) return;  // NO_SHARD keeps its copy's memory and refreshes it
    auto* storage = gathered_.storage().unsafeGetStorageImpl();
    storage->set_data_ptr_noswap(at::DataPtr(nullptr, gathered_.device()));
    storage->set_nbytes(0);
  }

  // --- Gradients.

  // Flattens the parameters' gradients (zeros where one has none), drops them, and starts their
  // average across ranks into this rank's shard.
  void reduce_gradients_async() {
    at::NoGradGuard no_grad;
    flat_grad_ = at::empty({padded_}, gathered_.options().dtype(settings_.reduce_dtype.value_or(shard_.scalar_type())));
    if (padded_ > total_) flat_grad_.narrow(0, total_, padded_ - total_).zero_();
    for (auto& m : members_) {
      auto slice = flat_grad_.narrow(0, m.offset, m.numel);
      if (m.param.grad().defined())
        slice.copy_(m.param.grad().reshape({-1}));
      else
        slice.zero_();
      m.param.mutable_grad().reset();
    }
    traffic_.shard_group += flat_grad_.nbytes();
    if (settings_.shard) {
      reduced_grad_ = at::empty({shard_numel_}, flat_grad_.options());
      pending_reduce_.emplace(comm_.reduce_scatter_async(reduced_grad_, flat_grad_, ReduceOp::mean));
    } else {
      reduced_grad_ = flat_grad_;
      pending_reduce_.emplace(comm_.all_reduce_async(reduced_grad_, ReduceOp::mean));
    }
  }
  bool reducing() const { return pending_reduce_.has_value(); }
  // Waits for the reduction (and averages it across replicas) and adds it to the shard's gradient.
  void finish_gradients() {
    if (!pending_reduce_) return;
    pending_reduce_->wait();
    pending_reduce_.reset();
    at::NoGradGuard no_grad;
    if (replicas_) {
      replicas_->all_reduce(reduced_grad_, ReduceOp::mean);
      traffic_.replicas += reduced_grad_.nbytes();
    }
    auto& grad = shard_.mutable_grad();
    auto reduced = reduced_grad_.to(shard_.device(), shard_.scalar_type());
    if (grad.defined())
      grad.add_(reduced);
    else
      grad = reduced.detach();
    flat_grad_ = at::Tensor();
    reduced_grad_ = at::Tensor();
  }
  // Whether any parameter of the unit holds a gradient not yet reduced.
  bool has_local_gradients() const {
    for (const auto& m : members_)
      if (m.param.grad().defined()) return true;
    return false;
  }

  // --- State.

  // The unit's parameters in full, in the shard's dtype, by name, in host memory (a collective:
  // every rank). Host memory, so that a model too large for one GPU can be consolidated one unit
  // at a time (PyTorch's FULL_STATE_DICT with offload_to_cpu).
  std::vector<std::pair<std::string, at::Tensor>> full_parameters() {
    at::NoGradGuard no_grad;
    auto full = shard_.detach();
    if (settings_.shard) {
      full = at::empty({padded_}, gathered_.options().dtype(shard_.scalar_type()));
      comm_.all_gather_into(full, shard_.detach().to(full.device()));
    }
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& m : members_)
      out.emplace_back(m.name, full.narrow(0, m.offset, m.numel).view(m.param.sizes()).to(at::kCPU, false, true));
    return out;
  }
  // Takes this rank's slice of full parameters given by name.
  void load_full_parameters(const std::map<std::string, at::Tensor>& state) {
    at::NoGradGuard no_grad;
    auto full = at::zeros({padded_}, shard_.options());
    for (const auto& m : members_) full.narrow(0, m.offset, m.numel).copy_(state.at(m.name).reshape({-1}));
    shard_.copy_(settings_.shard ? full.narrow(0, comm_.rank() * shard_numel_, shard_numel_) : full);
    if (!aliased_) release();
  }

  const std::string& name() const { return name_; }
  at::Tensor& shard() { return shard_; }
  FlatUnitLayout layout() const {
    FlatUnitLayout layout{name_,   shard_.scalar_type(), settings_.shard ? comm_.world_size() : 1,
                          padded_, shard_numel_,         {}};
    for (const auto& m : members_) layout.members.push_back({m.name, m.param.sizes().vec(), m.offset, m.numel});
    layout.numel = total_;
    layout.index = settings_.shard ? comm_.rank() : 0;
    return layout;
  }
  const std::vector<std::string> parameter_names() const {
    std::vector<std::string> names;
    for (const auto& m : members_) names.push_back(m.name);
    return names;
  }
  bool owns(const at::Tensor& param) const {
    for (const auto& m : members_)
      if (m.param.unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) return true;
    return false;
  }
  std::size_t size() const { return members_.size(); }
  int64_t total_numel() const { return total_; }
  int64_t shard_numel() const { return shard_numel_; }
  // Bytes of the full parameters when gathered, and whether they are now.
  std::size_t gathered_bytes() const { return aliased_ ? 0 : gathered_bytes_; }
  std::size_t gathered_bytes_held() const { return aliased_ ? 0 : gathered_.storage().nbytes(); }
  // What the unit gave its collectives since it was made.
  const CollectiveBytes& traffic() const { return traffic_; }

 private:
  struct Member {
    std::string name;
    at::Tensor param;
    int64_t offset;
    int64_t numel;
    std::shared_ptr<torch::autograd::Node> accumulator = nullptr;  // the tensor holds it only weakly
    uintptr_t hook = 0;
  };
  template <class Ready>
  struct Hook : torch::autograd::FunctionPostHook {
    Hook(Ready ready, std::size_t index) : ready(std::move(ready)), index(index) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list& /*inputs*/) override {
      ready(index);
      return outputs;
    }
    Ready ready;
    std::size_t index;
  };

  void allocate_gathered() {
    auto* storage = gathered_.storage().unsafeGetStorageImpl();
    if (storage->nbytes() == gathered_bytes_) return;
    const c10::DeviceGuard on_its_device(gathered_.device());  // allocators take the current device
    storage->set_data_ptr_noswap(storage->allocator()->allocate(gathered_bytes_));
    storage->set_nbytes(gathered_bytes_);
  }

  std::string name_;
  Comm& comm_;
  Comm* replicas_;
  FlatUnitSettings settings_;
  std::vector<Member> members_;
  int64_t total_ = 0, shard_numel_ = 0, padded_ = 0;
  at::Tensor shard_, gathered_, gather_input_, flat_grad_, reduced_grad_;
  std::size_t gathered_bytes_ = 0;
  bool aliased_ = false, is_gathered_ = false;
  CollectiveBytes traffic_;
  std::optional<typename Comm::Pending> pending_gather_, pending_reduce_;
};

}  // namespace acc::detail
