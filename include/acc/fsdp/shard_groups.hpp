// The two sub-groups of one rank under hybrid sharding (HYBRID_SHARD, HYBRID_SHARD_ZERO2): its
// shard group, the consecutive ranks its units are sharded over (by default the processes of its
// machine), and its replica group, the ranks that hold the same shard in the other shard groups.
// With G shard groups of S ranks, rank r is rank r % S of shard group r / S and rank r / S of
// replica group r % S. One shard group over the whole world has no replica group: FULL_SHARD.
#pragma once

#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/environment.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/options.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace acc::detail {

// The shard group size the options ask for in a world of `world` processes, `local` per machine;
// an error naming the settings when it does not divide the world.
inline int64_t shard_group_size(const FSDPOptions& options, int64_t world, int64_t local) {
  const int64_t replicas = options.replica_count();
  int64_t size = options.shard_group_size();
  if (size == 0) size = replicas > 0 && world % replicas == 0 ? world / replicas : local;
  const std::string settings =
      "(parallelism_config_dp_shard_size, FSDPOptions::shard_group_size: " +
      std::to_string(options.shard_group_size()) +
      "; parallelism_config_dp_replicate_size, FSDPOptions::replica_count: " + std::to_string(replicas) +
      "; 0 is unset)";
  if (size < 1 || world % size != 0)
    throw Error("hybrid sharding shards over groups of " + std::to_string(size) + " ranks, which does not divide the " +
                std::to_string(world) + " processes " + settings +
                "; give a shard group size that divides the number of processes (by default the processes of one "
                "machine)");
  if (replicas > 0 && replicas * size != world)
    throw Error("hybrid sharding with " + std::to_string(replicas) + " replicas of shard groups of " +
                std::to_string(size) + " ranks needs " + std::to_string(replicas * size) + " processes, not " +
                std::to_string(world) + " " + settings + "; make replicas x shard group size the number of processes");
  return size;
}

template <class Comm>
class HybridGroups {
 public:
  // A collective over the world: every rank builds its shard group's communicator, then its
  // replica group's, in this order. `world` is the strategy's communicator over every rank.
  HybridGroups(const ProcessEnvironment& env, const ProcessGroupOptions& process_group, const FSDPOptions& options,
               Comm& world)
      : world_(world) {
    const int64_t size = shard_group_size(options, env.world_size, env.local_world_size);
    if (size == env.world_size) return;  // one shard group: nothing to replicate
    std::vector<int> shard_ranks, replica_ranks;
    const int first = static_cast<int>(env.rank / size * size);
    for (int r = first; r < first + size; ++r) shard_ranks.push_back(r);
    for (int r = static_cast<int>(env.rank % size); r < env.world_size; r += static_cast<int>(size))
      replica_ranks.push_back(r);
    const auto store = job_store(env);
    shard_.emplace(env, store, process_group, RankGroup(shard_ranks, env.rank, env.world_size));
    replicas_.emplace(env, store, process_group, RankGroup(replica_ranks, env.rank, env.world_size));
  }
  HybridGroups(const HybridGroups&) = delete;
  HybridGroups& operator=(const HybridGroups&) = delete;

  // What units shard over.
  Comm& shard() { return shard_ ? *shard_ : world_; }
  // Who the shards' gradients are averaged with after the reduce-scatter; null when there is none.
  Comm* replicas() { return replicas_ ? &*replicas_ : nullptr; }

 private:
  Comm& world_;
  std::optional<Comm> shard_, replicas_;
};

}  // namespace acc::detail
