// A model split by acc::tp::parallelize saved as it is held: each rank of the tp group writes its
// own slices (and, when given, its optimizer's state), nothing is gathered, and the same split
// model resumes from them. `acc merge-weights DIR OUT` joins the ranks' files into whole weights in
// Hugging Face's layout without libtorch; acc::tp::full_state does it in the program.
//
//   acc::tp::save_sharded_state(*model, mesh.tp(), "checkpoint", &optimizer);  // every rank of the tp group
//   ...
//   acc::tp::load_sharded_state(*model, mesh.tp(), "checkpoint", &optimizer);  // the same split, same tp size
//
// Files, in `dir` (created): model_tp<r>.safetensors, rank r's parameters and buffers under the
// model's names, with the cut of each split tensor in its metadata ("acc_tp_shard": its rank, the
// tp size, and per split tensor [dim, parts] as nn::ShardLayout says), and optimizer_tp<r>.pt. Under
// 2-D parallelism the tp groups of other dp ranks hold the same slices: let one of them save (dp
// rank 0). Both are collectives of the tp group (a barrier at the end: the checkpoint is whole when
// save returns); a file is written beside its name and renamed over it, so that a save killed
// halfway leaves the previous one's files whole. load reads and checks the files before it changes
// the model: a file of another tp size or rank, of another plan, a missing, unexpected or misshapen
// tensor is an acc::Error naming the file and the tensor.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/tp/full_state.hpp>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <filesystem>
#include <string>

namespace acc::tp {

namespace detail {

// The metadata key of a rank's file, and the files' names.
inline constexpr const char* kShardMetadataKey = "acc_tp_shard";
ACC_DECL std::filesystem::path model_shard_file(const std::filesystem::path& dir, int rank);
ACC_DECL std::filesystem::path optimizer_shard_file(const std::filesystem::path& dir, int rank);

ACC_DECL void save_sharded_state(const torch::nn::Module& module, const torch::optim::Optimizer* optimizer,
                                 const std::filesystem::path& dir, int rank, int ranks);
ACC_DECL void load_sharded_state(torch::nn::Module& module, torch::optim::Optimizer* optimizer,
                                 const std::filesystem::path& dir, int rank, int ranks);

}  // namespace detail

template <class Comm>
void save_sharded_state(const torch::nn::Module& module, Comm& comm, const std::filesystem::path& dir,
                        const torch::optim::Optimizer* optimizer = nullptr) {
  detail::save_sharded_state(module, optimizer, dir, comm.rank(), comm.world_size());
  comm.barrier();
}

template <class Comm>
void load_sharded_state(torch::nn::Module& module, Comm& comm, const std::filesystem::path& dir,
                        torch::optim::Optimizer* optimizer = nullptr) {
  detail::load_sharded_state(module, optimizer, dir, comm.rank(), comm.world_size());
}

}  // namespace acc::tp

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/tp_sharded_state.ipp>
#endif
