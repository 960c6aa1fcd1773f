// How DDP synchronizes gradients (Python's DistributedDataParallelKwargs).
#pragma once

#include <torch/arg.h>

#include <cstdint>

namespace acc {

// PowerSGD's settings (PyTorch's PowerSGDState; strategy/power_sgd_hook.hpp), for the hooks
// acc::PowerSGDHook and acc::BatchedPowerSGDHook.
class PowerSGDOptions {
 public:
  // The rank of each low-rank approximation: the compression, and its loss, grow as it falls.
  TORCH_ARG(int64_t, matrix_approximation_rank) = 1;
  // Steps of plain all-reduce (counted per bucket) before compression starts (PyTorch's
  // start_powerSGD_iter): training's first steps are the least forgiving of compression error.
  TORCH_ARG(int64_t, start_iter) = 1000;
  // A gradient is compressed only if its elements outnumber those of its factors by this much.
  TORCH_ARG(double, min_compression_rate) = 2.0;
  // Each rank adds what compression lost last time to its next gradient: PowerSGD is biased, and
  // this is what makes it converge.
  TORCH_ARG(bool, use_error_feedback) = true;
  // Start each step's power iteration from the last step's factors, not from random ones.
  TORCH_ARG(bool, warm_start) = true;
  // Added to a column's norm before dividing by it (0: a zero column is left zero).
  TORCH_ARG(double, orthogonalization_epsilon) = 0.0;
  // Seeds the random starting factors: the same on every rank, so their factors agree.
  TORCH_ARG(uint64_t, random_seed) = 0;
};

class DDPOptions {
 public:
  // Size of a gradient bucket: its all-reduce starts when its last gradient is ready. 0 puts each
  // parameter in a bucket of its own.
  TORCH_ARG(double, bucket_cap_mb) = 25.0;
  // The first bucket (the last parameters, whose gradients come first) is kept small so that
  // communication starts early.
  TORCH_ARG(double, first_bucket_cap_mb) = 1.0;
  // Allow parameters that get no gradient in a step (found by walking the autograd graph before
  // backward, which costs a little); without it such a parameter is an error that names it.
  TORCH_ARG(bool, find_unused_parameters) = false;
  // The model's autograd graph is the same in every step (PyTorch's static_graph): the first
  // synchronized step learns how many times each parameter's gradient arrives (more than once
  // under reentrant backward, such as acc::checkpoint of a module used twice) and which parameters
  // find_unused_parameters found unused; later steps rely on both instead of searching the graph.
  // That first step starts its all-reduces at the end of backward. A step whose gradients arrive
  // otherwise is an error naming the parameter.
  TORCH_ARG(bool, static_graph) = false;
  // Beside tensor parallelism (parallelism_config_tp_size): the model is one acc::tp::parallelize
  // split over groups of tp_size consecutive ranks, and gradients are averaged over the ranks that
  // hold the same slices (an acc::DeviceMesh's dp group), each tp group reading the same batches.
  TORCH_ARG(int64_t, tp_size) = 1;
  // Used by the PowerSGD hooks; other hooks ignore it.
  TORCH_ARG(PowerSGDOptions, power_sgd) = {};
};

}  // namespace acc
