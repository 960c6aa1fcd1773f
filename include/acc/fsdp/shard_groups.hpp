// The sub-groups FSDP works over, laid out as an acc::DeviceMesh's dimensions (mesh/device_mesh.hpp):
// R replicas x S shard ranks x T tensor-parallel ranks, tp innermost. A rank's units are sharded over
// its shard group, the S ranks that hold the same tensor-parallel slices in its replica (by default
// under hybrid sharding the processes of its machine; otherwise every rank holding its slices), and
// their gradients averaged across its replica group, the ranks that hold the same shard in the other
// replicas (HYBRID_SHARD, HYBRID_SHARD_ZERO2). One shard group over the whole world needs no
// groups: FULL_SHARD without tensor parallelism.
#pragma once

#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/environment.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/options.hpp>
#include <acc/mesh/device_mesh.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

namespace acc::detail {

// The shape the options ask for in a world of `world` processes, `local` per machine, `hybrid`
// under a hybrid sharding policy; an error naming the settings when it does not divide the world.
inline MeshShape fsdp_mesh_shape(const FSDPOptions& options, bool hybrid, int64_t world, int64_t local) {
  const int64_t tp = options.tp_size();
  const int64_t ranks = data_parallel_size(tp, world, "FSDPOptions::tp_size");  // holding the same slices
  const auto as_shape = [tp](int64_t replicas, int64_t size) {
    return MeshShape{static_cast<int>(replicas), static_cast<int>(size), static_cast<int>(tp)};
  };
  if (!hybrid) return as_shape(1, ranks);
  const int64_t replicas = options.replica_count();
  int64_t size = options.shard_group_size();
  if (size == 0) size = replicas > 0 && ranks % replicas == 0 ? ranks / replicas : std::max<int64_t>(local / tp, 1);
  const std::string settings =
      "(parallelism_config_dp_shard_size, FSDPOptions::shard_group_size: " +
      std::to_string(options.shard_group_size()) +
      "; parallelism_config_dp_replicate_size, FSDPOptions::replica_count: " + std::to_string(replicas) +
      "; 0 is unset)";
  const std::string among = tp == 1 ? std::to_string(ranks) + " processes"
                                    : std::to_string(ranks) +
                                          " ranks holding each tensor-parallel slice (the processes over tp_size " +
                                          std::to_string(tp) + ")";
  if (size < 1 || ranks % size != 0)
    throw Error("hybrid sharding shards over groups of " + std::to_string(size) + " ranks, which does not divide the " +
                among + " " + settings +
                "; give a shard group size that divides the number of processes (by default the processes of one "
                "machine)");
  if (replicas > 0 && replicas * size != ranks)
    throw Error("hybrid sharding with " + std::to_string(replicas) + " replicas of shard groups of " +
                std::to_string(size) + " ranks needs " + std::to_string(replicas * size * tp) + " processes, not " +
                std::to_string(world) + " " + settings + "; make replicas x shard group size" +
                (tp == 1 ? "" : " x tp_size") + " the number of processes");
  return as_shape(ranks / size, size);
}

template <class Comm>
class ShardGroups {
 public:
  // A collective over the world: every rank builds its shard group's communicator, then its
  // replica group's if there are replicas, in this order. `world` is the strategy's communicator
  // over every rank.
  ShardGroups(const ProcessEnvironment& env, const ProcessGroupOptions& process_group, const MeshShape& shape,
              Comm& world)
      : world_(world) {
    if (shape.dp_shard == env.world_size) return;  // one shard group: nothing to replicate
    const auto store = job_store(env);
    shard_.emplace(env, store, process_group,
                   RankGroup(mesh_group_ranks(shape, env.rank, MeshDim::dp_shard), env.rank, env.world_size));
    if (shape.dp_replicate > 1)
      replicas_.emplace(env, store, process_group,
                        RankGroup(mesh_group_ranks(shape, env.rank, MeshDim::dp_replicate), env.rank, env.world_size));
  }
  ShardGroups(const ShardGroups&) = delete;
  ShardGroups& operator=(const ShardGroups&) = delete;

  // What units shard over.
  Comm& shard() { return shard_ ? *shard_ : world_; }
  // Who the shards' gradients are averaged with after the reduce-scatter; null when there is none.
  Comm* replicas() { return replicas_ ? &*replicas_ : nullptr; }

 private:
  Comm& world_;
  std::optional<Comm> shard_, replicas_;
};

}  // namespace acc::detail
