// acc::save_model_files(state, dir, max_shard_size): a model's full state written as Python's
// save_model writes it (Hugging Face's layout): dir/model.safetensors, or, when the state is
// larger than max_shard_size, model-00001-of-0000N.safetensors ... with model.safetensors.index.json
// (checkpoint/weight_shards.hpp). Files of an earlier save there with another layout are removed;
// the directory must have room for the state (else an acc::Error saying how much). One process
// writes: Accelerator::save_model calls it on the main process, a tensor-parallel program with
// acc::tp::full_state's result on one rank.
//
//   auto state = acc::tp::full_state(*model, mesh.tp());  // every rank: the gathered weights
//   if (mesh.global_rank() == 0) acc::save_model_files(state, "gpt", "5GB");
#pragma once

#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/linkage.hpp>

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace acc {

ACC_DECL void save_model_files(const std::vector<std::pair<std::string, at::Tensor>>& state,
                               const std::filesystem::path& dir, const ShardSize& max_shard_size);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/model_files.ipp>
#endif
