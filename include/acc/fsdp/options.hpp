// How FSDP chooses its units and moves parameters (Python's FullyShardedDataParallelPlugin; the
// sharding strategy itself is the FSDP policy's second parameter, see fsdp/sharding.hpp).
#pragma once

#include <c10/core/ScalarType.h>
#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace acc {

class FSDPOptions {
 public:
  enum class AutoWrap {
    declared_units,     // every acc::Unit in the model, and the children of a root Sequential
    transformer_based,  // those whose class is in transformer_layer_cls_to_wrap
    size_based,         // those with at least min_num_params parameters
    no_wrap             // none: the whole model is one unit
  };
  enum class BackwardPrefetch { backward_pre, backward_post, none };
  // What save_state writes of the model (the YAML's fsdp_state_dict_type): the full state, gathered
  // onto the main process (FULL_STATE_DICT), or each rank's own shards with their layout
  // (SHARDED_STATE_DICT: no gather; loads on the same number of processes; `acc merge-weights`
  // makes full weights of it).
  enum class StateDictType { full, sharded };
  TORCH_ARG(AutoWrap, auto_wrap_policy) = AutoWrap::declared_units;
  // Class names as Module::name() gives them; "Block" also matches "BlockImpl" and "ns::Block".
  TORCH_ARG(std::vector<std::string>, transformer_layer_cls_to_wrap) = {};
  TORCH_ARG(int64_t, min_num_params) = 100000000;
  // When the next unit's all-gather starts in backward: as the current unit's backward begins
  // (pre) or once its gradients are reduced (post).
  TORCH_ARG(BackwardPrefetch, backward_prefetch) = BackwardPrefetch::backward_pre;
  // Start the next unit's all-gather when a unit's forward begins.
  TORCH_ARG(bool, forward_prefetch) = false;
  // Rank 0's parameters and buffers go to every rank at prepare().
  TORCH_ARG(bool, sync_module_states) = true;
  // Rank-0 loading (the YAML's fsdp_cpu_ram_efficient_loading; off by default, as in Python's
  // FullyShardedDataParallelPlugin): only rank 0 needs the model's weights; the other ranks may
  // build it inside acc::init_empty_weights() (meta tensors, no memory) and receive their shards
  // from rank 0 at prepare(), one unit at a time, buffers too. Implies sync_module_states (every
  // rank ends with rank 0's values, as Python forces sync_module_states on with it).
  TORCH_ARG(bool, cpu_ram_efficient_loading) = false;
  // Shards, their gradients and the optimizer's state in host memory, the step on the CPU (the
  // YAML's fsdp_offload_params): GPU memory holds only gathered units. No effect on CPU ranks.
  TORCH_ARG(bool, offload_params) = false;
  // HYBRID_SHARD: the ranks a unit is sharded over, consecutive global ranks (0 .. n-1, n .. 2n-1,
  // ...; with tp_size, of those holding the same tensor-parallel slices). 0: replica_count's share
  // of them if that is set, else the processes of one machine (the launcher's local world size).
  // The config's parallelism_config_dp_shard_size.
  TORCH_ARG(int64_t, shard_group_size) = 0;
  // HYBRID_SHARD: how many copies of the sharded model there are (the world over the shard group
  // size; 0: whatever that is). The config's parallelism_config_dp_replicate_size.
  TORCH_ARG(int64_t, replica_count) = 0;
  // Tensor parallelism beside FSDP (2-D parallelism): prepare is given a model that
  // acc::tp::parallelize split over groups of this many consecutive ranks (an acc::DeviceMesh's tp
  // dimension), and the units shard over the ranks that hold the same slices (the mesh's dp_shard
  // group; with hybrid sharding replicated over its dp_replicate group). 1: none. The config's
  // parallelism_config_tp_size.
  TORCH_ARG(int64_t, tp_size) = 1;
  TORCH_ARG(StateDictType, state_dict_type) = StateDictType::full;
  // The dtype gradients are averaged in across ranks (Python's MixedPrecision.reduce_dtype).
  // Unset: the shards' own (float32 master weights reduce in float32, however low the compute
  // dtype); at::kBFloat16 halves the reduce-scatter's bytes at bf16's 8-bit mantissa, as Python
  // Accelerate's FSDP does under mixed_precision: bf16.
  TORCH_ARG(std::optional<at::ScalarType>, reduce_dtype) = std::nullopt;
};

}  // namespace acc
