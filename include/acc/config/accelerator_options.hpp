// The options of an Accelerator (the keyword arguments of Python's Accelerator and its
// *Kwargs handlers), as libtorch-style option structs with chained setters.
#pragma once

#include <acc/checkpoint/project_configuration.hpp>
#include <acc/config/environment.hpp>
#include <acc/precision/grad_scaler.hpp>

#include <torch/arg.h>

#include <cstdint>

namespace acc {

// How DDP synchronizes gradients (Python's DistributedDataParallelKwargs).
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

class AcceleratorOptions {
 public:
  // Where this process sits in the job; read from the launcher's variables by default.
  TORCH_ARG(ProcessEnvironment, environment) = ProcessEnvironment::from_environment();
  // Train on the CPU even where a GPU is available.
  TORCH_ARG(bool, cpu) = false;
  // Data loaders give every process the same number of batches (see acc::Sharding).
  TORCH_ARG(bool, even_batches) = true;
  // A loader's batch_size is the global batch, split across processes.
  TORCH_ARG(bool, split_batches) = false;
  // Micro-batches per optimizer step: gradients are accumulated locally and synchronized on the
  // last one (see Accelerator::accumulate).
  TORCH_ARG(int64_t, gradient_accumulation_steps) = 1;
  TORCH_ARG(DDPOptions, ddp) = {};
  // Loss scaling of FP16 (Python's GradScalerKwargs).
  TORCH_ARG(GradScalerOptions, grad_scaler) = {};
  // Where save_state/load_state put and find checkpoints (Python's project_config).
  TORCH_ARG(ProjectConfiguration, project_config) = {};
};

}  // namespace acc
