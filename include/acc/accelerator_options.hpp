// The options of an Accelerator (the keyword arguments of Python's Accelerator and its
// *Kwargs handlers), as libtorch-style option structs with chained setters.
#pragma once

#include <acc/checkpoint/project_configuration.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/config/config.hpp>
#include <acc/config/environment.hpp>
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
inline FSDPOptions fsdp_options(const Config& config) {
  const auto& fsdp = config.fsdp;
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
      .cpu_ram_efficient_loading(fsdp.cpu_ram_efficient_loading)
      .offload_params(fsdp.offload_params)
      .shard_group_size(config.dp_shard_size.value_or(0))
      .replica_count(config.dp_replicate_size.value_or(0))
      .tp_size(config.tp_size)
      .state_dict_type(fsdp.state_dict_type == "SHARDED_STATE_DICT" ? FSDPOptions::StateDictType::sharded
                                                                    : FSDPOptions::StateDictType::full);
}

// FP8's recipe as the config's fp8_config says: backend AO is torchao's dynamic tensorwise
// scaling, TE TransformerEngine's delayed scaling.
inline FP8Recipe fp8_recipe(const Config& config) {
  const auto& fp8 = config.fp8;
  return FP8Recipe()
      .format(fp8.fp8_format == "E4M3" ? FP8Recipe::Format::e4m3 : FP8Recipe::Format::hybrid)
      .scaling(fp8.backend == "TE" ? FP8Recipe::Scaling::delayed : FP8Recipe::Scaling::tensorwise)
      .amax_history_len(fp8.amax_history_len)
      .amax_compute_algorithm(fp8.amax_compute_algorithm == "max" ? FP8Recipe::AmaxAlgorithm::max
                                                                  : FP8Recipe::AmaxAlgorithm::most_recent)
      .margin(fp8.margin);
}

// The Accelerator's options as the config says.
inline AcceleratorOptions accelerator_options(const Config& config) {
  auto process_group = ProcessGroupOptions().debug(config.debug);
  if (config.collective_timeout) process_group.timeout(std::chrono::seconds(*config.collective_timeout));
  return AcceleratorOptions()
      .process_group(process_group)
      .fsdp(fsdp_options(config))
      .cpu(config.use_cpu)
      .gradient_accumulation_steps(config.gradient_accumulation_steps)
      .even_batches(config.even_batches)
      .split_batches(config.split_batches)
      .log_with(config.log_with)
      .fp8(fp8_recipe(config))
      .activation_checkpointing(config.distributed_type == "FSDP" && config.fsdp.activation_checkpointing)
      .ddp(DDPOptions()
               .bucket_cap_mb(config.bucket_cap_mb)
               .first_bucket_cap_mb(config.first_bucket_cap_mb)
               .find_unused_parameters(config.find_unused_parameters)
               .static_graph(config.static_graph)
               .tp_size(config.tp_size)
               .power_sgd(PowerSGDOptions()
                              .matrix_approximation_rank(config.power_sgd_rank)
                              .start_iter(config.power_sgd_start_iter)
                              .min_compression_rate(config.power_sgd_min_compression_rate)
                              .warm_start(config.power_sgd_warm_start)
                              .use_error_feedback(config.power_sgd_error_feedback)));
}

inline AcceleratorOptions AcceleratorOptions::from_environment() {
  return accelerator_options(Config().with_overrides(process_variable))
      .environment(ProcessEnvironment::from_environment());
}

}  // namespace acc
