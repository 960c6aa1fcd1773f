// How DDP synchronizes gradients (Python's DistributedDataParallelKwargs).
#pragma once

#include <torch/arg.h>

namespace acc {

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
};

}  // namespace acc
