// acc::DeviceMesh: the job's ranks arranged in named dimensions, as PyTorch's init_device_mesh
// arranges them: (dp_replicate, dp_shard, tp), row-major, tp innermost, so that the ranks of one
// tensor-parallel group are consecutive (on one machine, where the traffic is heaviest). Rank r has
// coordinates (r / (S * T), r / T % S, r % T) for sizes (R, S, T).
//
// Each dimension has its sub-group: the ranks whose other coordinates are this rank's. The mesh
// builds a communicator over each (and one over the data-parallel ranks, dp_replicate x dp_shard
// flattened, who hold the same tensor-parallel shard) once, at construction: a collective over the
// world, each rank building them in the same order. The communicator type is a template parameter
// (acc::Gloo, acc::Nccl): the collectives on the hot path are not virtual.
#pragma once

#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/config.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/linkage.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace acc {

enum class MeshDim { dp_replicate, dp_shard, tp };

inline constexpr std::array<MeshDim, 3> mesh_dims{MeshDim::dp_replicate, MeshDim::dp_shard, MeshDim::tp};

// "dp_replicate", "dp_shard", "tp".
ACC_DECL std::string_view name_of(MeshDim dim);

// The size of each dimension. Unset sizes in a config are 1, but for dp_shard: the processes left.
struct MeshShape {
  int dp_replicate = 1;
  int dp_shard = 1;
  int tp = 1;

  // parallelism_config_dp_replicate_size, _dp_shard_size and _tp_size over `world_size` processes.
  ACC_DECL static MeshShape from_config(const Config& config, int world_size);

  int size(MeshDim dim) const {
    return dim == MeshDim::dp_replicate ? dp_replicate : dim == MeshDim::dp_shard ? dp_shard : tp;
  }
  int ranks() const { return dp_replicate * dp_shard * tp; }
  // An acc::Error naming the sizes and their config keys unless each is at least 1 and their
  // product is `world_size`.
  ACC_DECL void check(int world_size) const;
  // "dp_replicate 2 x dp_shard 2 x tp 2".
  ACC_DECL std::string describe() const;
};

// The ranks that hold the same tensor-parallel slices, world_size / tp: an acc::Error naming the
// config key and `setting` (the options member a strategy reads it from) when tp does not divide
// the world.
ACC_DECL int64_t data_parallel_size(int64_t tp, int64_t world_size, std::string_view setting);

// The global ranks of `global_rank`'s group along `dim` (every coordinate but dim's fixed), or
// along the data-parallel dimensions together when `dim` is empty.
ACC_DECL std::vector<int> mesh_group_ranks(const MeshShape& shape, int global_rank, std::optional<MeshDim> dim);

template <class Comm>
class DeviceMesh {
 public:
  // A collective over the job: every rank builds its groups' communicators (dp_replicate,
  // dp_shard, tp, then dp), over the job's store.
  DeviceMesh(const ProcessEnvironment& env, const MeshShape& shape,
             const ProcessGroupOptions& process_group = ProcessGroupOptions())
      : shape_((shape.check(env.world_size), shape)), rank_(env.rank) {
    const auto store = job_store(env);
    for (const MeshDim dim : mesh_dims) {
      auto& group = groups_.emplace_back(mesh_group_ranks(shape_, env.rank, dim), env.rank, env.world_size);
      comms_[index(dim)].emplace(env, store, process_group, group);
    }
    dp_group_.emplace(mesh_group_ranks(shape_, env.rank, std::nullopt), env.rank, env.world_size);
    dp_.emplace(env, store, process_group, *dp_group_);
  }
  DeviceMesh(const DeviceMesh&) = delete;
  DeviceMesh& operator=(const DeviceMesh&) = delete;

  const MeshShape& shape() const { return shape_; }
  int size(MeshDim dim) const { return shape_.size(dim); }
  // This rank's place along `dim`: its rank in that dimension's group.
  int coordinate(MeshDim dim) const { return groups_[index(dim)].rank(); }
  int global_rank() const { return rank_; }

  const RankGroup& group(MeshDim dim) const { return groups_[index(dim)]; }
  Comm& comm(MeshDim dim) { return *comms_[index(dim)]; }
  Comm& dp_replicate() { return comm(MeshDim::dp_replicate); }
  Comm& dp_shard() { return comm(MeshDim::dp_shard); }
  Comm& tp() { return comm(MeshDim::tp); }

  // The data-parallel ranks (dp_replicate x dp_shard, flattened): those holding the same
  // tensor-parallel shard, over which gradients are averaged.
  const RankGroup& dp_group() const { return *dp_group_; }
  Comm& dp() { return *dp_; }

 private:
  static std::size_t index(MeshDim dim) { return static_cast<std::size_t>(dim); }

  MeshShape shape_;
  int rank_;
  std::vector<RankGroup> groups_;  // in mesh_dims' order
  std::array<std::optional<Comm>, 3> comms_;
  std::optional<RankGroup> dp_group_;
  std::optional<Comm> dp_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/mesh/impl/device_mesh.ipp>
#endif
