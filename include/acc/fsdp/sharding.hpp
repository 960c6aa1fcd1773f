// FSDP's sharding policies: what stays sharded, and when gathered parameters are freed. Their
// names are the YAML's fsdp_sharding_strategy values.
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
};

// As FullShard, but parameters stay gathered from a unit's forward until its backward is done.
struct ShardGradOp {
  static constexpr std::string_view name = "SHARD_GRAD_OP";
  static constexpr bool shards_parameters = true;
  static constexpr bool reshard_after_forward = false;
};

// Nothing sharded: every rank holds everything and gradients are all-reduced (DDP's memory).
struct NoShard {
  static constexpr std::string_view name = "NO_SHARD";
  static constexpr bool shards_parameters = false;
  static constexpr bool reshard_after_forward = false;
};

namespace detail {
template <class S, class = void>
struct is_sharding_policy : std::false_type {};
template <class S>
struct is_sharding_policy<S, std::void_t<decltype(std::string_view{S::name}), decltype(bool{S::shards_parameters}),
                                         decltype(bool{S::reshard_after_forward})>> : std::true_type {};
}  // namespace detail

template <class S>
inline constexpr bool is_sharding_policy_v = detail::is_sharding_policy<S>::value;

}  // namespace acc
