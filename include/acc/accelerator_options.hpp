// The options of an Accelerator (the keyword arguments of Python's Accelerator and its
// *Kwargs handlers), as libtorch-style option structs with chained setters.
#pragma once

#include <acc/checkpoint/project_configuration.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/config/config.hpp>
#include <acc/config/environment.hpp>
#include <acc/precision/grad_scaler.hpp>

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

// How FSDP chooses its units and moves parameters (Python's FullyShardedDataParallelPlugin; the
// sharding strategy itself is the FSDP policy's second parameter).
class FSDPOptions {
 public:
  enum class AutoWrap {
    declared_units,     // every acc::Unit in the model, and the children of a root Sequential
    transformer_based,  // those whose class is in transformer_layer_cls_to_wrap
    size_based,         // those with at least min_num_params parameters
    no_wrap             // none: the whole model is one unit
  };
  enum class BackwardPrefetch { backward_pre, backward_post, none };
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
  // Shards, their gradients and the optimizer's state in host memory, the step on the CPU (the
  // YAML's fsdp_offload_params): GPU memory holds only gathered units. No effect on CPU ranks.
  TORCH_ARG(bool, offload_params) = false;
};

class AcceleratorOptions {
 public:
  // Where this process sits in the job; unset: read from the launcher's variables
  // (ProcessEnvironment::from_environment) when the Accelerator is built, not here: options are
  // plain values.
  TORCH_ARG(std::optional<ProcessEnvironment>, environment) = std::nullopt;
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
  TORCH_ARG(FSDPOptions, fsdp) = {};
  // Collective timeout and debug mode (Python's InitProcessGroupKwargs and debug).
  TORCH_ARG(ProcessGroupOptions, process_group) = {};
  // Loss scaling of FP16 (Python's GradScalerKwargs).
  TORCH_ARG(GradScalerOptions, grad_scaler) = {};
  // Where save_state/load_state put and find checkpoints, and trackers write (Python's project_config).
  TORCH_ARG(ProjectConfiguration, project_config) = {};
  // The trackers init_trackers starts (Python's log_with): "jsonl", "csv", "tensorboard" or "all"
  // (see include/acc/tracking/trackers.hpp).
  TORCH_ARG(std::vector<std::string>, log_with) = {};

 public:  // TORCH_ARG leaves the members private
  // The options the process's variables set, as Python's Accelerator() reads them: the keys of
  // the config schema that have one (ACCELERATE_GRADIENT_ACCUMULATION_STEPS, ACC_COLLECTIVE_TIMEOUT,
  // ACCELERATE_DEBUG_MODE, ACCELERATE_USE_CPU, ACC_LOG_WITH, FSDP_*; `acc env` lists them) and
  // where this process sits; the rest are the defaults. What `Accelerator<...> accelerator;` uses.
  static AcceleratorOptions from_environment();
};

// FSDP's options as the config's fsdp_config says (its sharding strategy picks the policy).
inline FSDPOptions fsdp_options(const FsdpConfig& fsdp) {
  using Wrap = FSDPOptions::AutoWrap;
  using Prefetch = FSDPOptions::BackwardPrefetch;
  const auto wrap = fsdp.auto_wrap_policy == "TRANSFORMER_BASED_WRAP" ? Wrap::transformer_based
                    : fsdp.auto_wrap_policy == "SIZE_BASED_WRAP"      ? Wrap::size_based
                                                                      : Wrap::no_wrap;
  const auto prefetch = fsdp.backward_prefetch == "BACKWARD_PRE"    ? Prefetch::backward_pre
                        : fsdp.backward_prefetch == "BACKWARD_POST" ? Prefetch::backward_post
                                                                    : Prefetch::none;
  return FSDPOptions()
      .auto_wrap_policy(wrap)
      .transformer_layer_cls_to_wrap(fsdp.transformer_layer_cls_to_wrap)
      .min_num_params(fsdp.min_num_params)
      .backward_prefetch(prefetch)
      .forward_prefetch(fsdp.forward_prefetch)
      .sync_module_states(fsdp.sync_module_states)
      .offload_params(fsdp.offload_params);
}

// The Accelerator's options as the config says.
inline AcceleratorOptions accelerator_options(const Config& config) {
  auto process_group = ProcessGroupOptions().debug(config.debug);
  if (config.collective_timeout) process_group.timeout(std::chrono::seconds(*config.collective_timeout));
  return AcceleratorOptions()
      .process_group(process_group)
      .fsdp(fsdp_options(config.fsdp))
      .cpu(config.use_cpu)
      .gradient_accumulation_steps(config.gradient_accumulation_steps)
      .even_batches(config.even_batches)
      .split_batches(config.split_batches)
      .log_with(config.log_with)
      .ddp(DDPOptions()
               .bucket_cap_mb(config.bucket_cap_mb)
               .first_bucket_cap_mb(config.first_bucket_cap_mb)
               .find_unused_parameters(config.find_unused_parameters));
}

inline AcceleratorOptions AcceleratorOptions::from_environment() {
  return accelerator_options(Config().with_overrides(process_variable))
      .environment(ProcessEnvironment::from_environment());
}

}  // namespace acc
