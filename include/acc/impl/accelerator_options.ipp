// The bodies of accelerator_options.hpp's non-template functions.
#pragma once

#include <acc/accelerator_options.hpp>

namespace acc {

ACC_DECL FSDPOptions fsdp_options(const Config& config) {
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
      .state_dict_type(fsdp.state_dict_type == "SHARDED_STATE_DICT" ? FSDPOptions::StateDictType::sharded
                                                                    : FSDPOptions::StateDictType::full);
}

ACC_DECL FP8Recipe fp8_recipe(const Config& config) {
  const auto& fp8 = config.fp8;
  return FP8Recipe()
      .format(fp8.fp8_format == "E4M3" ? FP8Recipe::Format::e4m3 : FP8Recipe::Format::hybrid)
      .scaling(fp8.backend == "TE" ? FP8Recipe::Scaling::delayed : FP8Recipe::Scaling::tensorwise)
      .amax_history_len(fp8.amax_history_len)
      .amax_compute_algorithm(fp8.amax_compute_algorithm == "max" ? FP8Recipe::AmaxAlgorithm::max
                                                                  : FP8Recipe::AmaxAlgorithm::most_recent)
      .margin(fp8.margin);
}

ACC_DECL AcceleratorOptions accelerator_options(const Config& config) {
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
               .power_sgd(PowerSGDOptions()
                              .matrix_approximation_rank(config.power_sgd_rank)
                              .start_iter(config.power_sgd_start_iter)
                              .min_compression_rate(config.power_sgd_min_compression_rate)
                              .warm_start(config.power_sgd_warm_start)
                              .use_error_feedback(config.power_sgd_error_feedback)));
}

ACC_DECL AcceleratorOptions AcceleratorOptions::from_environment() {
  return accelerator_options(Config().with_overrides(process_variable))
      .environment(ProcessEnvironment::from_environment());
}

}  // namespace acc
