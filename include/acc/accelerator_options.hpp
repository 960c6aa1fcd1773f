// The options of an Accelerator (the keyword arguments of Python's Accelerator and its
// *Kwargs handlers), as libtorch-style option structs with chained setters.
#pragma once

#include <acc/checkpoint/project_configuration.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/config/config.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/fp8/recipe.hpp>
#include <acc/fsdp/options.hpp>
#include <acc/precision/grad_scaler.hpp>
#include <acc/strategy/ddp_options.hpp>

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace acc {

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
  // The main process reads every loader's batches and sends each process its own (see
  // acc::Sharding); unset: streams are dispatched, random-access datasets are not.
  TORCH_ARG(std::optional<bool>, dispatch_batches) = std::nullopt;
  // Micro-batches per optimizer step: gradients are accumulated locally and synchronized on the
  // last one (see Accelerator::accumulate).
  TORCH_ARG(int64_t, gradient_accumulation_steps) = 1;
  // The last batch of the prepared loader in use ends an accumulation cycle early (Python's
  // GradientAccumulationPlugin.sync_with_dataloader).
  TORCH_ARG(bool, sync_with_dataloader) = true;
  // Gradients are synchronized after every micro-batch, the optimizer still steps every
  // gradient_accumulation_steps-th: more communication, but FSDP then holds sharded gradients
  // only, not the full model's (Python's GradientAccumulationPlugin.sync_each_batch).
  TORCH_ARG(bool, sync_each_batch) = false;
  // Activation checkpointing: the model's units (acc::Unit, a Sequential's children) keep no
  // activations in forward and recompute them in backward (acc::checkpoint_units). The config's
  // fsdp_activation_checkpointing sets it under FSDP.
  TORCH_ARG(bool, activation_checkpointing) = false;
  // Each strategy takes its part: DDP ddp() and process_group(), FSDP fsdp() and process_group().
  TORCH_ARG(DDPOptions, ddp) = {};
  TORCH_ARG(FSDPOptions, fsdp) = {};
  // Collective timeout and debug mode (Python's InitProcessGroupKwargs and debug).
  TORCH_ARG(ProcessGroupOptions, process_group) = {};
  // Loss scaling of FP16 (Python's GradScalerKwargs).
  TORCH_ARG(GradScalerOptions, grad_scaler) = {};
  // What FP8 puts in fp8 and how it scales (Python's FP8RecipeKwargs / fp8_config).
  TORCH_ARG(FP8Recipe, fp8) = {};
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

// FSDP's options as the config's fsdp_config and parallelism_config say (the sharding strategy
// picks the policy).
ACC_DECL FSDPOptions fsdp_options(const Config& config);
// FP8's recipe as the config's fp8_config says: backend AO is torchao's dynamic tensorwise
// scaling, TE TransformerEngine's delayed scaling.
ACC_DECL FP8Recipe fp8_recipe(const Config& config);
// The Accelerator's options as the config says.
ACC_DECL AcceleratorOptions accelerator_options(const Config& config);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/impl/accelerator_options.ipp>
#endif
