// FSDP's sharding policies: what stays sharded, over which ranks, and when gathered parameters are
// freed. Their names are the YAML's fsdp_sharding_strategy values.
#pragma once

#include <string_view>
#include <type_traits>

namespace acc {

// Parameters, gradients and optimizer state sharded; parameters gathered before each unit's
// forward and again before its backward, freed after each.
struct FullShard {
  static constexpr std::string_view name = "FULL_SHARD";
  static constexpr bool shards_parameters = true;
  static constexpr bool reshard_after_forward = true;
  static constexpr bool replicates = false;  // sharded over every rank
};

// As FullShard, but parameters stay gathered from a unit's forward until its backward is done.
struct ShardGradOp {
  static constexpr std::string_view name = "SHARD_GRAD_OP";
  static constexpr bool shards_parameters = true;
  static constexpr bool reshard_after_forward = false;
  static constexpr bool replicates = false;
};

// Nothing sharded: every rank holds everything and gradients are all-reduced (DDP's memory).
struct NoShard {
  static constexpr std::string_view name = "NO_SHARD";
  static constexpr bool shards_parameters = false;
  static constexpr bool reshard_after_forward = false;
  static constexpr bool replicates = false;
};

// HSDP: as FullShard within a shard group of ranks (by default the processes of one machine, see
// FSDPOptions::shard_group_size), replicated across the groups: gradients are reduce-scattered
// within the group, then the shards' gradients all-reduced with the ranks holding the same shard
// in the other groups. Gathers stay on the machine; between machines only the shards' gradients go.
struct HybridShard {
  static constexpr std::string_view name = "HYBRID_SHARD";
  static constexpr bool shards_parameters = true;
  static constexpr bool reshard_after_forward = true;
  static constexpr bool replicates = true;
};

// HybridShard keeping the gathered parameters from forward to backward, as ShardGradOp.
struct HybridShardZero2 {
  static constexpr std::string_view name = "HYBRID_SHARD_ZERO2";
  static constexpr bool shards_parameters = true;
  static constexpr bool reshard_after_forward = false;
  static constexpr bool replicates = true;
};

namespace detail {
template <class S, class = void>
struct is_sharding_policy : std::false_type {};
template <class S>
struct is_sharding_policy<S, std::void_t<decltype(std::string_view{S::name}), decltype(bool{S::shards_parameters}),
                                         decltype(bool{S::reshard_after_forward}), decltype(bool{S::replicates})>>
    : std::true_type {};
}  // namespace detail

template <class S>
inline constexpr bool is_sharding_policy_v = detail::is_sharding_policy<S>::value;

}  // namespace acc
