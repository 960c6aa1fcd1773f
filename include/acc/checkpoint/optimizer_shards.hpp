// FSDP's optimizer state on another number of processes. Each rank's optimizer steps one flat shard
// per unit (fsdp/flat_unit.hpp), and save_state writes each rank's state to its own file
// (optimizer_rank<r>.bin), recording in acc_state.json how every unit was split
// (CheckpointMetadata::FlatUnit). A unit's flat order does not depend on the number of ranks, only
// the padding at its end does; so a rank of a job with another number (or another hybrid shard
// group size) finds its slice [index * shard_numel, (index + 1) * shard_numel) of every unit in the
// saved files that overlap it, and zeros where the slice is padding.
//
// Why per-rank files dealt out at load rather than a full optimizer state gathered at save (as
// Python's FULL_STATE_DICT does): a save stays free of collectives and no rank ever holds more than
// the saved files overlapping its own slices (about its share of the state when the job shrinks,
// two or three saved ranks' shares when it grows), where a gathered state would sit whole on the
// main process at every save and on every rank at a load.
//
// State with no element per parameter element (AdamW's step count, a scalar tensor) must be the same
// in every saved file (the ranks stepped together): each rank checks the files it reads and copies
// it, and the checkpointer compares what the ranks copied. So is the state of a parameter the
// optimizer holds whole (one of no unit).
#pragma once

#include <acc/checkpoint/metadata.hpp>
#include <acc/detail/linkage.hpp>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace acc::detail {

// One unit of a sharding strategy on this rank.
struct OptimizerShard {
  CheckpointMetadata::FlatUnit unit;  // how this job splits it
  int64_t index = 0;                  // this rank's slice
  at::Tensor tensor;                  // what the optimizer steps for it
};

// The units of this job, split as they are.
ACC_DECL std::vector<CheckpointMetadata::FlatUnit> units_of(const std::vector<OptimizerShard>& here);

// What deal_optimizer_state makes.
struct DealtOptimizerState {
  torch::serialize::InputArchive archive;  // what detail::load_optimizer reads
  // The state copied rather than dealt, one line per entry ("<group>.<parameter>.<entry>=<value>",
  // a tensor by its dtype, shape and CRC-32C): the same on every rank of a job reading one checkpoint.
  std::string copied;
};

// This rank's state of `optimizer` (whose parameter groups hold `here`'s tensors), from what
// save_optimizer wrote on the saving job's ranks, whose units were split as `saved` says:
// saved_archive(r) reads rank r's archive, for the ranks 0 .. shards - 1 whose shards overlap this
// rank's slices (at least one). The state goes to each parameter's device. An acc::Error names the
// unit, parameter or entry that does not fit.
ACC_DECL DealtOptimizerState
deal_optimizer_state(const std::vector<CheckpointMetadata::FlatUnit>& saved, const std::vector<OptimizerShard>& here,
                     const torch::optim::Optimizer& optimizer,
                     const std::function<torch::serialize::InputArchive(int64_t rank)>& saved_archive);

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/optimizer_shards.ipp>
#endif
