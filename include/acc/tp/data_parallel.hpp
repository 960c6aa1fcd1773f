// Data parallelism beside tensor parallelism (2-D parallelism, TP x DDP): the gradients of a model
// split by acc::tp::parallelize averaged over the mesh's dp group only, the ranks that hold the
// same shards, never across a tp group (whose members hold different shards). It is DDP's
// machinery over that group: buckets whose all-reduces start from autograd hooks as soon as their
// gradients are ready, overlapping backward, the communication hook a template parameter (no
// virtual call on the hot path).
//
//   acc::DeviceMesh<acc::Gloo> mesh(env, {/*dp_replicate=*/2, /*dp_shard=*/1, /*tp=*/2});
//   acc::tp::parallelize(*model, mesh, plan);
//   acc::tp::DataParallel<acc::Gloo> data_parallel(*model, mesh.dp());
//   ... each dp rank reads its share of the batches (the ranks of one tp group the same one):
//   data_parallel.zero_grad();
//   data_parallel.backward(loss);  // the gradients averaged over mesh.dp()
//   optimizer.step();
#pragma once

#include <acc/strategy/ddp_hook.hpp>
#include <acc/strategy/ddp_options.hpp>
#include <acc/strategy/gradient_buckets.hpp>
#include <acc/strategy/process_group.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace acc::tp {

template <class Comm, class Hook = AllReduceHook>
class DataParallel {
 public:
  // A collective over `dp`: every member starts from the weights of the group's first rank (as DDP
  // does), then the trained parameters are laid out in buckets. Keep `dp` (the mesh) and `module`
  // alive while this is.
  DataParallel(torch::nn::Module& module, Comm& dp, const DDPOptions& options = DDPOptions())
      : dp_(dp), options_(options), hook_(acc::detail::make_hook<Hook>(options_)) {
    acc::detail::broadcast_module_state(dp_, module);
    std::vector<std::pair<std::string, at::Tensor>> trained;
    for (const auto& p : module.named_parameters())
      if (p.value().requires_grad()) trained.emplace_back(p.key(), p.value());
    buckets_.emplace(dp_, hook_, trained, options_);
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // loss.backward(), then waits for the buckets' all-reduces: the gradients are the dp group's mean.
  void backward(const at::Tensor& loss) {
    buckets_->prepare_for_backward(loss);
    loss.backward();
    buckets_->finish();
  }

  // Drops the gradients (instead of the optimizer's zero_grad): the next backward's go straight
  // into the buckets.
  void zero_grad() { buckets_->zero_grad(); }

  Comm& comm() { return dp_; }

 private:
  Comm& dp_;
  DDPOptions options_;
  Hook hook_;
  std::optional<acc::detail::GradientBuckets<Comm, Hook>> buckets_;
};

}  // namespace acc::tp
