// The bodies of config.hpp: the schema's rows, the YAML reader and writer, the overrides.
#pragma once

#include <acc/config/config.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <type_traits>

namespace acc {
namespace detail {

template <auto Member>
ConfigField config_field(Config& config) {
  return &(config.*Member);
}
template <auto Member>
ConfigField fsdp_field(Config& config) {
  return &(config.fsdp.*Member);
}
template <auto Member>
ConfigField fp8_field(Config& config) {
  return &(config.fp8.*Member);
}
inline bool never_written(const Config&) { return false; }
inline bool for_fsdp(const Config& config) { return config.distributed_type == "FSDP"; }
inline bool for_fp8(const Config& config) { return config.mixed_precision == "fp8"; }
inline bool for_parallelism(const Config& config) {
  return config.dp_replicate_size || config.dp_shard_size || config.tp_size != 1 || config.cp_size != 1;
}

inline ConfigKey key_of(std::string_view section, std::string_view name, std::string_view variable, ConfigType type,
                        std::string_view help, ConfigField (*field)(Config&)) {
  ConfigKey key;
  key.section = section;
  key.name = name;
  key.variable = variable;
  key.type = type;
  key.help = help;
  key.field = field;
  return key;
}
inline ConfigKey with_allowed(ConfigKey key, std::vector<std::string> allowed) {
  key.allowed = std::move(allowed);
  return key;
}
inline ConfigKey with_range(ConfigKey key, int64_t min, int64_t max) {
  key.min = min;
  key.max = max;
  return key;
}
inline ConfigKey with_values(ConfigKey key, std::string_view values) {
  key.values = values;
  return key;
}
inline ConfigKey ignored_key(std::string_view name, std::string_view fixed = "", std::string_view section = "") {
  auto key = key_of(section, name, "", ConfigType::ignored, "", nullptr);
  key.fixed = fixed;
  return key;
}

inline std::string join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : std::string(separator)) + item;
  return out;
}

// Names separated by commas, each trimmed of spaces.
inline std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  for (std::size_t start = 0; start <= text.size();) {
    const auto end = std::min(text.find(',', start), text.size());
    auto name = text.substr(start, end - start);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    names.push_back(name);
    start = end + 1;
  }
  return names;
}

inline std::string number_text(double value) {
  char buffer[64];
  const auto end = std::to_chars(buffer, buffer + sizeof buffer, value).ptr;
  return std::string(buffer, end);
}

inline bool for_transformer_wrap(const Config& config) {
  return for_fsdp(config) && config.fsdp.auto_wrap_policy == "TRANSFORMER_BASED_WRAP";
}
inline bool for_size_wrap(const Config& config) {
  return for_fsdp(config) && config.fsdp.auto_wrap_policy == "SIZE_BASED_WRAP";
}

// The sharding strategies by name, or by the numbers older Accelerate versions wrote (1-5).
inline const std::vector<std::string> kShardingStrategies{"FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD",
                                                          "HYBRID_SHARD_ZERO2"};
inline void read_sharding_strategy(Config& config, const std::string& text) {
  const bool numbered = text.size() == 1 && text[0] >= '1' && text[0] <= '5';
  config.fsdp.sharding_strategy = numbered ? kShardingStrategies[static_cast<std::size_t>(text[0] - '1')] : text;
}
inline void read_fp16(Config& config, const std::string& text) {
  if (*parse_bool(text)) config.mixed_precision = "fp16";
}
inline void read_reshard_after_forward(Config& config, const std::string& text) {
  config.fsdp.sharding_strategy = *parse_bool(text) ? "FULL_SHARD" : "SHARD_GRAD_OP";
}

}  // namespace detail

ACC_DECL const std::vector<ConfigKey>& config_keys() {
  using detail::config_field;
  using detail::fp8_field;
  using detail::fsdp_field;
  using detail::key_of;
  using detail::with_allowed;
  using detail::with_range;
  using detail::with_values;
  using T = ConfigType;
  const auto alias = [](ConfigKey key, void (*read)(Config&, const std::string&)) {
    key.read = read;
    key.written = detail::never_written;
    return key;
  };
  const auto reading = [](ConfigKey key, void (*read)(Config&, const std::string&)) {
    key.read = read;
    return key;
  };
  const auto only_when = [](ConfigKey key, bool (*written)(const Config&)) {
    key.written = written;
    return key;
  };
  std::vector<std::string> sharding_strategies = detail::kShardingStrategies;
  for (const char* number : {"1", "2", "3", "4", "5"}) sharding_strategies.emplace_back(number);
  const auto fsdp = [](std::string_view name, std::string_view variable, ConfigType type, std::string_view help,
                       ConfigField (*field)(Config&)) {
    auto key = key_of("fsdp_config", name, variable, type, help, field);
    key.written = detail::for_fsdp;
    return key;
  };
  static const std::vector<ConfigKey> keys = [&] {
    std::vector<ConfigKey> rows = {
        with_allowed(key_of("", "compute_environment", "", T::choice, "only local machines (no SageMaker)",
                            config_field<&Config::compute_environment>),
                     {"LOCAL_MACHINE"}),
        with_allowed(key_of("", "distributed_type", "ACC_DISTRIBUTED_TYPE", T::choice,
                            "the strategy: `Single`, `CPU` (DDP over Gloo), `DDP<Nccl>`, `FSDP<...>`; several "
                            "processes without a config pick `MULTI_CPU` or `MULTI_GPU`",
                            config_field<&Config::distributed_type>),
                     {"NO", "MULTI_CPU", "MULTI_GPU", "FSDP"}),
        with_allowed(key_of("", "mixed_precision", "ACCELERATE_MIXED_PRECISION", T::choice,
                            "the precision policy: `FP32`, `FP16`, `BF16`, `FP8` (`acc launch --mixed_precision`; "
                            "fp8 needs a GPU of compute capability 8.9 or newer, [fp8.md](fp8.md))",
                            config_field<&Config::mixed_precision>),
                     {"no", "fp16", "bf16", "fp8"}),
        alias(key_of("", "fp16", "", T::flag, "older Accelerate's spelling: `true` means `mixed_precision: fp16`",
                     nullptr),
              detail::read_fp16),
        key_of("", "use_cpu", "ACCELERATE_USE_CPU", T::flag,
               "train on the CPU even where a GPU is; FSDP over Gloo (`acc launch --cpu`)",
               config_field<&Config::use_cpu>),
        with_range(key_of("", "num_processes", "", T::integer,
                          "processes of all machines together (a multiple of `num_machines`)",
                          config_field<&Config::num_processes>),
                   1, 1 << 20),
        with_range(key_of("", "num_machines", "", T::integer, "machines", config_field<&Config::num_machines>), 1,
                   1 << 16),
        with_range(key_of("", "machine_rank", "", T::integer, "this machine's number, below `num_machines`",
                          config_field<&Config::machine_rank>),
                   0, 1 << 16),
        with_values(key_of("", "main_process_ip", "", T::text, "machine rank 0's address",
                           config_field<&Config::main_process_ip>),
                    "host name or address, or `null`"),
        with_range(
            key_of("", "main_process_port", "", T::integer, "the rendezvous port (unset: 29500); 0 picks a free one",
                   config_field<&Config::main_process_port>),
            0, 65535),
        with_values(key_of("", "gpu_ids", "", T::text, "the GPUs `acc launch` uses (unset: all)",
                           config_field<&Config::gpu_ids>),
                    "`all` or indices such as `0,1`"),
        with_allowed(key_of("", "rdzv_backend", "", T::choice,
                            "accepted for compatibility; the rendezvous is a c10d TCPStore either way",
                            config_field<&Config::rdzv_backend>),
                     {"static", "c10d"}),
        key_of("", "same_network", "", T::flag, "accepted for compatibility", config_field<&Config::same_network>),
        with_values(key_of("", "main_training_function", "", T::text,
                           "accepted for compatibility (a C++ program has its own `main`)",
                           config_field<&Config::main_training_function>),
                    "any name"),
        with_allowed(key_of("", "downcast_bf16", "", T::choice, "accepted for compatibility (a TPU option)",
                            config_field<&Config::downcast_bf16>),
                     {"no", "yes", "fp16", "bf16"}),
        key_of("", "debug", "ACCELERATE_DEBUG_MODE", T::flag,
               "ranks compare every collective (operation, dtype, shape) before running it: a mismatch is an error "
               "instead of a hang",
               config_field<&Config::debug>),
        with_range(key_of("", "gradient_accumulation_steps", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", T::integer,
                          "micro-batches per optimizer step (`accelerator.accumulate(model)`)",
                          config_field<&Config::gradient_accumulation_steps>),
                   1, 1 << 20),
        key_of("", "fsdp_config", "", T::mapping, "FSDP's settings (below)", nullptr),
        only_when(key_of("", "fp8_config", "", T::mapping, "FP8's recipe (below); written for `mixed_precision: fp8`",
                         nullptr),
                  detail::for_fp8),
        key_of("", "deepspeed_config", "", T::unsupported, "not supported: a non-empty one is an error", nullptr),
        key_of("", "megatron_lm_config", "", T::unsupported, "not supported: a non-empty one is an error", nullptr),
        only_when(key_of("", "parallelism_config", "", T::mapping,
                         "Accelerate 1.x's parallelism sizes (below); written when one is set", nullptr),
                  detail::for_parallelism),
        key_of("", "acc", "", T::mapping, "accelerate-cpp's own settings (below)", nullptr),

        only_when(with_range(key_of("parallelism_config", "parallelism_config_dp_replicate_size",
                                    "PARALLELISM_CONFIG_DP_REPLICATE_SIZE", T::integer,
                                    "copies of the sharded model: above 1, FSDP's `FULL_SHARD` is `HYBRID_SHARD` and "
                                    "`SHARD_GRAD_OP` `HYBRID_SHARD_ZERO2` (FSDP2's HSDP)",
                                    config_field<&Config::dp_replicate_size>),
                             1, 1 << 20),
                  detail::for_parallelism),
        only_when(with_range(key_of("parallelism_config", "parallelism_config_dp_shard_size",
                                    "PARALLELISM_CONFIG_DP_SHARD_SIZE", T::integer,
                                    "the ranks each hybrid-sharded unit is sharded over (unset: the processes over "
                                    "the replicas, else one machine's)",
                                    config_field<&Config::dp_shard_size>),
                             1, 1 << 20),
                  detail::for_parallelism),
        only_when(with_range(key_of("parallelism_config", "parallelism_config_tp_size", "PARALLELISM_CONFIG_TP_SIZE",
                                    T::integer,
                                    "the ranks each tensor-parallel layer is split over: the innermost dimension of "
                                    "`acc::DeviceMesh`, which `acc::tp::parallelize` splits a model over; DDP then "
                                    "averages gradients, and FSDP shards, over the ranks that hold the same slices "
                                    "([tensor_parallelism.md](tensor_parallelism.md))",
                                    config_field<&Config::tp_size>),
                             1, 1 << 20),
                  detail::for_parallelism),
        only_when(with_range(key_of("parallelism_config", "parallelism_config_cp_size", "", T::integer,
                                    "context parallelism: not built yet, only 1", config_field<&Config::cp_size>),
                             1, 1),
                  detail::for_parallelism),

        reading(
            with_allowed(fsdp("fsdp_sharding_strategy", "FSDP_SHARDING_STRATEGY", T::choice,
                              "the `Sharding` policy: `FullShard`, `ShardGradOp`, `NoShard`, `HybridShard`, "
                              "`HybridShardZero2` (the hybrid ones sharded within a machine, see [fsdp.md](fsdp.md)); "
                              "1-5 are older Accelerate's numbers for them",
                              fsdp_field<&FsdpConfig::sharding_strategy>),
                         sharding_strategies),
            detail::read_sharding_strategy),
        alias(fsdp("fsdp_reshard_after_forward", "", T::flag,
                   "FSDP2's spelling: `true` is `FULL_SHARD`, `false` `SHARD_GRAD_OP`", nullptr),
              detail::read_reshard_after_forward),
        with_allowed(
            fsdp("fsdp_auto_wrap_policy", "FSDP_AUTO_WRAP_POLICY", T::choice,
                 "which declared units are wrapped ([fsdp.md](fsdp.md))", fsdp_field<&FsdpConfig::auto_wrap_policy>),
            {"TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"}),
        only_when(
            fsdp("fsdp_transformer_layer_cls_to_wrap", "FSDP_TRANSFORMER_CLS_TO_WRAP", T::names,
                 "the classes `TRANSFORMER_BASED_WRAP` wraps", fsdp_field<&FsdpConfig::transformer_layer_cls_to_wrap>),
            detail::for_transformer_wrap),
        only_when(with_range(fsdp("fsdp_min_num_params", "FSDP_MIN_NUM_PARAMS", T::integer,
                                  "the size `SIZE_BASED_WRAP` wraps from", fsdp_field<&FsdpConfig::min_num_params>),
                             0, INT64_MAX),
                  detail::for_size_wrap),
        with_allowed(
            fsdp("fsdp_backward_prefetch", "FSDP_BACKWARD_PREFETCH", T::choice,
                 "when the next unit's all-gather starts in backward", fsdp_field<&FsdpConfig::backward_prefetch>),
            {"BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"}),
        only_when(
            with_allowed(fsdp("fsdp_backward_prefetch_policy", "", T::choice,
                              "older spelling of `fsdp_backward_prefetch`", fsdp_field<&FsdpConfig::backward_prefetch>),
                         {"BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"}),
            detail::never_written),
        fsdp("fsdp_forward_prefetch", "FSDP_FORWARD_PREFETCH", T::flag,
             "start the next unit's all-gather as a unit's forward begins", fsdp_field<&FsdpConfig::forward_prefetch>),
        with_allowed(fsdp("fsdp_state_dict_type", "FSDP_STATE_DICT_TYPE", T::choice,
                          "what save_state writes of the model: FULL_STATE_DICT (and LOCAL_STATE_DICT) the full "
                          "model, gathered onto rank 0; SHARDED_STATE_DICT each rank's own shards, loaded back on "
                          "as many processes (`acc merge-weights` makes full weights of them); each rank's "
                          "optimizer shards either way",
                          fsdp_field<&FsdpConfig::state_dict_type>),
                     {"FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT"}),
        fsdp("fsdp_offload_params", "FSDP_OFFLOAD_PARAMS", T::flag,
             "shards, gradients and optimizer state in host memory", fsdp_field<&FsdpConfig::offload_params>),
        fsdp("fsdp_sync_module_states", "FSDP_SYNC_MODULE_STATES", T::flag,
             "rank 0's parameters go to every rank at `prepare`", fsdp_field<&FsdpConfig::sync_module_states>),
        fsdp("fsdp_use_orig_params", "FSDP_USE_ORIG_PARAMS", T::flag, "accepted for compatibility",
             fsdp_field<&FsdpConfig::use_orig_params>),
        fsdp("fsdp_cpu_ram_efficient_loading", "FSDP_CPU_RAM_EFFICIENT_LOADING", T::flag,
             "rank-0 loading: only rank 0 needs the weights; the other ranks may build the model inside "
             "`acc::init_empty_weights()` and receive their shards from rank 0 at `prepare`, one unit at a time "
             "([fsdp.md](fsdp.md#rank-0-loading))",
             fsdp_field<&FsdpConfig::cpu_ram_efficient_loading>),
        fsdp("fsdp_activation_checkpointing", "FSDP_ACTIVATION_CHECKPOINTING", T::flag,
             "each unit recomputes its forward in backward instead of keeping its activations "
             "([activation_checkpointing.md](activation_checkpointing.md))",
             fsdp_field<&FsdpConfig::activation_checkpointing>),
        with_range(fsdp("fsdp_version", "", T::integer, "accepted", nullptr), 1, 2),

        only_when(with_allowed(key_of("fp8_config", "backend", "ACCELERATE_FP8_BACKEND", T::choice,
                                      "whose recipe to follow: `AO` torchao's (scales from each tensor's amax now), "
                                      "`TE` TransformerEngine's (delayed scaling from an amax history); the kernels "
                                      "are accelerate-cpp's own",
                                      fp8_field<&Fp8Config::backend>),
                               {"AO", "TE"}),
                  detail::for_fp8),
        only_when(with_allowed(key_of("fp8_config", "fp8_format", "ACCELERATE_FP8_FORMAT", T::choice,
                                      "`HYBRID`: e4m3 forward, e5m2 gradients; `E4M3`: e4m3 for both",
                                      fp8_field<&Fp8Config::fp8_format>),
                               {"HYBRID", "E4M3"}),
                  detail::for_fp8),
        only_when(with_range(key_of("fp8_config", "amax_history_len", "ACCELERATE_FP8_AMAX_HISTORY_LEN", T::integer,
                                    "`TE`: steps of amax history a scale is made from",
                                    fp8_field<&Fp8Config::amax_history_len>),
                             1, 1024),
                  detail::for_fp8),
        only_when(with_allowed(key_of("fp8_config", "amax_compute_algorithm", "ACCELERATE_FP8_AMAX_COMPUTE_ALGO",
                                      T::choice, "`TE`: the history's `max`, or its `most_recent` amax",
                                      fp8_field<&Fp8Config::amax_compute_algorithm>),
                               {"max", "most_recent"}),
                  detail::for_fp8),
        only_when(with_range(key_of("fp8_config", "margin", "ACCELERATE_FP8_MARGIN", T::integer,
                                    "`TE`: scales are divided by 2^margin for headroom", fp8_field<&Fp8Config::margin>),
                             0, 30),
                  detail::for_fp8),

        with_range(
            key_of("acc", "bucket_cap_mb", "", T::number, "DDP's gradient bucket size (0: a bucket per parameter)",
                   config_field<&Config::bucket_cap_mb>),
            0, 0),
        with_range(key_of("acc", "first_bucket_cap_mb", "", T::number,
                          "the first bucket, kept small so that communication starts early",
                          config_field<&Config::first_bucket_cap_mb>),
                   0, 0),
        key_of("acc", "find_unused_parameters", "", T::flag,
               "allow parameters without a gradient in a step (else such a parameter is an error naming it)",
               config_field<&Config::find_unused_parameters>),
        key_of("acc", "static_graph", "", T::flag,
               "every step uses the parameters as the first one does (DDP learns that step's gradient arrivals, "
               "and may then run a module twice under activation checkpointing)",
               config_field<&Config::static_graph>),
        with_values(key_of("acc", "ddp_comm_hook", "ACC_DDP_COMM_HOOK", T::text,
                           "DDP's communication hook: `no` (all-reduce), `fp16`, `bf16` (all-reduce in that type), "
                           "`power_sgd`, `batched_power_sgd`, or a user hook's `name`; `acc::run` must have been "
                           "given `acc::DDP<Comm, Hook>` with it ([policies.md](policies.md#ddp-communication-hooks))",
                           config_field<&Config::ddp_comm_hook>),
                    "`no`, `fp16`, `bf16`, `power_sgd`, `batched_power_sgd`, or a hook's name"),
        with_range(key_of("acc", "power_sgd_rank", "", T::integer,
                          "PowerSGD's matrix approximation rank (PyTorch's `matrix_approximation_rank`)",
                          config_field<&Config::power_sgd_rank>),
                   1, 1 << 16),
        with_range(key_of("acc", "power_sgd_start_iter", "", T::integer,
                          "steps of plain all-reduce before PowerSGD compresses (PyTorch's `start_powerSGD_iter`)",
                          config_field<&Config::power_sgd_start_iter>),
                   0, std::numeric_limits<int>::max()),
        with_range(key_of("acc", "power_sgd_min_compression_rate", "", T::number,
                          "PowerSGD compresses a gradient only if its factors are this many times smaller",
                          config_field<&Config::power_sgd_min_compression_rate>),
                   0, 0),
        key_of("acc", "power_sgd_warm_start", "", T::flag, "PowerSGD starts each step from the last step's factors",
               config_field<&Config::power_sgd_warm_start>),
        key_of("acc", "power_sgd_error_feedback", "", T::flag,
               "PowerSGD adds what compression lost to the next step's gradient",
               config_field<&Config::power_sgd_error_feedback>),
        with_range(key_of("acc", "collective_timeout", "ACC_COLLECTIVE_TIMEOUT", T::integer,
                          "seconds a collective may take: one not done by then fails, naming the rank (unset: 1800)",
                          config_field<&Config::collective_timeout>),
                   1, 1 << 24),
        with_allowed(
            key_of("acc", "sampler", "", T::choice, "the sampler policy `acc::run` picks: `Sequential`, `Shuffled`",
                   config_field<&Config::sampler>),
            {"sequential", "shuffled"}),
        key_of("acc", "even_batches", "", T::flag,
               "every process gets as many batches (repeats at the end, dropped again by `gather_for_metrics`)",
               config_field<&Config::even_batches>),
        key_of("acc", "split_batches", "", T::flag,
               "a loader's `batch_size` is the global batch, split across processes",
               config_field<&Config::split_batches>),
        with_allowed(key_of("acc", "log_with", "ACC_LOG_WITH", T::names, "the trackers `init_trackers` starts",
                            config_field<&Config::log_with>),
                     {"all", "jsonl", "csv", "tensorboard"}),
    };
    // Accelerate writes these for features a C++ program has no use for: accepted and ignored.
    for (const auto& [name, fixed] :
         std::vector<std::pair<std::string_view, std::string_view>>{{"tpu_env", "[]"},
                                                                    {"tpu_use_cluster", "false"},
                                                                    {"tpu_use_sudo", "false"},
                                                                    {"tpu_name", ""},
                                                                    {"tpu_zone", ""},
                                                                    {"commands", ""},
                                                                    {"command_file", ""},
                                                                    {"dynamo_config", ""},
                                                                    {"dynamo_backend", ""},
                                                                    {"ipex_config", ""},
                                                                    {"mpirun_config", ""},
                                                                    {"enable_cpu_affinity", ""}})
      rows.push_back(detail::ignored_key(name, fixed));
    // Accelerate's fp8_config settings for its Python back ends.
    for (const std::string_view name :
         {"interval", "override_linear_precision", "use_autocast_during_eval", "opt_level"})
      rows.push_back(only_when(detail::ignored_key(name, "", "fp8_config"), detail::never_written));
    return rows;
  }();
  return keys;
}

namespace detail {

inline const ConfigKey* find_key(std::string_view section, std::string_view name) {
  for (const auto& key : config_keys())
    if (key.section == section && key.name == name) return &key;
  return nullptr;
}

ACC_DECL const std::vector<std::string>& mixed_precision_values() {
  static const std::vector<std::string> values = find_key("", "mixed_precision")->allowed;
  return values;
}

inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The known key of `section` nearest to `name`.
inline std::string nearest_key(std::string_view section, std::string_view name) {
  const ConfigKey* nearest = nullptr;
  for (const auto& key : config_keys())
    if (key.section == section && (!nearest || edit_distance(name, key.name) < edit_distance(name, nearest->name)))
      nearest = &key;
  return nearest->qualified();
}

// The values of `key` in words, as messages and the reference give them.
inline std::string allowed_values(const ConfigKey& key, bool markdown) {
  const auto quoted = [&](const std::string& value) { return markdown ? "`" + value + "`" : value; };
  const auto listed = [&](const std::vector<std::string>& values) {
    std::string out;
    for (const auto& value : values) out += (out.empty() ? "" : ", ") + quoted(value);
    return out;
  };
  switch (key.type) {
    case ConfigType::choice:
      return listed(key.allowed);
    case ConfigType::flag:
      return listed({"true", "false"});
    case ConfigType::integer:
      return "an integer from " + std::to_string(key.min) + " to " + std::to_string(key.max);
    case ConfigType::number:
      return "a number of at least " + number_text(static_cast<double>(key.min));
    case ConfigType::names:
      return (key.allowed.empty() ? std::string("names") : listed(key.allowed)) +
             " (a list, or names separated by commas)";
    case ConfigType::mapping:
      return "a mapping";
    case ConfigType::ignored:
      return "anything (ignored)";
    case ConfigType::unsupported:
      return "an empty mapping";
    case ConfigType::text:
      break;
  }
  return std::string(key.values);
}

// Parses `text` as the value of `key` into `config`; returns why it cannot, naming the key.
inline std::optional<std::string> assign(const ConfigKey& key, Config& config, const std::string& text) {
  const std::string refused =
      "'" + key.qualified() + "' is '" + text + "'; allowed values: " + allowed_values(key, false);
  std::optional<bool> flag;
  std::optional<int64_t> integer;
  double number = 0;
  std::vector<std::string> names;
  switch (key.type) {
    case ConfigType::choice:
      if (std::find(key.allowed.begin(), key.allowed.end(), text) == key.allowed.end()) return refused;
      break;
    case ConfigType::flag:
      if (!(flag = parse_bool(text))) return refused;
      break;
    case ConfigType::integer: {
      int64_t parsed = 0;
      const auto end = text.data() + text.size();
      const auto [stop, error] = std::from_chars(text.data(), end, parsed);
      if (text.empty() || error != std::errc() || stop != end || parsed < key.min || parsed > key.max) return refused;
      integer = parsed;
      break;
    }
    case ConfigType::number: {
      char* stop = nullptr;
      number = std::strtod(text.c_str(), &stop);
      if (text.empty() || *stop != '\0' || !(number >= static_cast<double>(key.min)) || number > 1e300) return refused;
      break;
    }
    case ConfigType::names:  // empty: none
      for (auto& name : text.empty() ? std::vector<std::string>{} : split_names(text)) {
        if (!key.allowed.empty() && std::find(key.allowed.begin(), key.allowed.end(), name) == key.allowed.end())
          return "'" + key.qualified() + "' names '" + name + "'; allowed values: " + allowed_values(key, false);
        if (!name.empty()) names.push_back(std::move(name));
      }
      break;
    default:
      break;
  }
  if (key.read) {
    key.read(config, text);
    return std::nullopt;
  }
  if (!key.field) return std::nullopt;
  std::visit(
      [&](auto* member) {
        using Member = std::remove_pointer_t<decltype(member)>;
        if constexpr (std::is_same_v<Member, bool>)
          *member = *flag;
        else if constexpr (std::is_same_v<Member, int> || std::is_same_v<Member, std::optional<int>>)
          *member = static_cast<int>(*integer);
        else if constexpr (std::is_same_v<Member, int64_t>)
          *member = *integer;
        else if constexpr (std::is_same_v<Member, double>)
          *member = number;
        else if constexpr (std::is_same_v<Member, std::vector<std::string>>)
          *member = names;
        else
          *member = text;
      },
      key.field(config));
  return std::nullopt;
}

// A YAML scalar for `value`: plain where every YAML reader takes it for the same string, else
// single-quoted (a plain `no` is false to PyYAML, so Accelerate writes 'no').
inline std::string yaml_scalar(const std::string& value, bool is_string) {
  if (!is_string) return value;
  std::string lower;
  for (char c : value) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::vector<std::string> kOtherTypeWords = {"null", "y", "n", "yes", "no", "true", "false", "on", "off"};
  const bool plain = !value.empty() &&
                     (std::isalpha(static_cast<unsigned char>(value[0])) || value[0] == '_' || value[0] == '/') &&
                     std::all_of(value.begin(), value.end(),
                                 [](unsigned char c) { return std::isalnum(c) || std::strchr("_.:/,+-", c); }) &&
                     std::find(kOtherTypeWords.begin(), kOtherTypeWords.end(), lower) == kOtherTypeWords.end();
  if (plain) return value;
  const bool printable_only =
      std::all_of(value.begin(), value.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
  if (!printable_only) return "\"" + printable(value) + "\"";  // \xNN is an escape in double quotes
  std::string out = "'";
  for (char c : value) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

inline bool is_string_field(const ConfigKey& key, Config& config) {
  return key.field && std::visit(
                          [](auto* member) {
                            using Member = std::remove_pointer_t<decltype(member)>;
                            return std::is_same_v<Member, std::string> ||
                                   std::is_same_v<Member, std::optional<std::string>> ||
                                   std::is_same_v<Member, std::vector<std::string>>;
                          },
                          key.field(config));
}

[[noreturn]] inline void fail_at(const std::string& source, const YAML::Mark& mark, const std::string& message) {
  throw Error(source + (mark.is_null() ? "" : ":" + std::to_string(mark.line + 1)) + ": " + printable(message));
}

// Reads the mapping `node`, the keys of `section`, into `config`.
inline void read_section(const YAML::Node& node, const std::string& source, std::string_view section, Config& config) {
  const std::string name = section.empty() ? "the config" : "'" + std::string(section) + "'";
  if (!node.IsMap()) fail_at(source, node.Mark(), name + " must be a mapping of keys to values");
  std::map<std::string, YAML::Mark> seen;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar())  // "? {a: 1}: x" or "[a]: x" (found by fuzzing)
      fail_at(source, entry.first.Mark(),
              name +
                  " has a key that is not a name (a list, a mapping or nothing); keys are names such as "
                  "'mixed_precision'");
    const auto text = entry.first.as<std::string>();
    const ConfigKey* key = find_key(section, text);
    const std::string qualified = section.empty() ? text : std::string(section) + "." + text;
    if (!key)
      fail_at(source, entry.first.Mark(),
              "unknown key '" + qualified + "'; did you mean '" + nearest_key(section, text) + "'?");
    const auto [first, unique] = seen.emplace(text, entry.first.Mark());
    if (!unique)  // YAML readers differ on which one wins
      fail_at(source, entry.first.Mark(),
              "'" + qualified + "' is given twice, on lines " + std::to_string(first->second.line + 1) + " and " +
                  std::to_string(entry.first.Mark().line + 1) + "; keep one of them");
    const YAML::Node& value = entry.second;
    switch (key->type) {
      case ConfigType::mapping:
        if (!value.IsNull()) read_section(value, source, key->name, config);  // a scalar is an error there
        continue;
      case ConfigType::ignored:
        continue;
      case ConfigType::unsupported:
        if (!value.IsNull() && value.size() > 0)
          fail_at(source, value.Mark(),
                  "'" + qualified + "' is not supported by accelerate-cpp; remove it (use FSDP or MULTI_GPU)");
        continue;
      default:
        break;
    }
    std::string scalar;
    if (value.IsNull() && key->field &&
        (std::holds_alternative<std::optional<std::string>*>(key->field(config)) ||
         std::holds_alternative<std::optional<int>*>(key->field(config)))) {
      std::visit([](auto* member) { *member = {}; }, key->field(config));
      continue;
    }
    if (key->type == ConfigType::names && value.IsSequence()) {
      std::vector<std::string> items;
      for (const auto& item : value) {
        if (!item.IsScalar()) fail_at(source, item.Mark(), "'" + qualified + "' must be a list of names");
        items.push_back(item.as<std::string>());
      }
      scalar = join(items, ",");
    } else if (key->type == ConfigType::names && value.IsNull()) {
      scalar = "";
    } else {
      if (!value.IsScalar()) fail_at(source, value.Mark(), "'" + qualified + "' must be a single value");
      scalar = value.as<std::string>();
    }
    if (auto refused = assign(*key, config, scalar)) fail_at(source, value.Mark(), *refused);
  }
}

}  // namespace detail

ACC_DECL std::string detail::printable(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f)
      out += c;
    else
      out += std::string("\\x") + kHex[byte >> 4] + kHex[byte & 15];
  }
  return out;
}

ACC_DECL std::optional<std::string> config_value(const ConfigKey& key, const Config& config) {
  if (!key.field) return std::nullopt;
  Config copy = config;  // the accessor hands out pointers into a Config it may change
  return std::visit(
      [](auto* member) -> std::optional<std::string> {
        using Member = std::remove_pointer_t<decltype(member)>;
        if constexpr (std::is_same_v<Member, bool>)
          return *member ? "true" : "false";
        else if constexpr (std::is_same_v<Member, int> || std::is_same_v<Member, int64_t>)
          return std::to_string(*member);
        else if constexpr (std::is_same_v<Member, double>)
          return detail::number_text(*member);
        else if constexpr (std::is_same_v<Member, std::optional<int>>)
          return *member ? std::optional(std::to_string(**member)) : std::nullopt;
        else if constexpr (std::is_same_v<Member, std::optional<std::string>>)
          return *member;
        else if constexpr (std::is_same_v<Member, std::vector<std::string>>)
          return detail::join(*member, ",");
        else
          return *member;
      },
      key.field(copy));
}

ACC_DECL Config Config::from_yaml(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(source + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + detail::printable(e.msg));
  }
  Config config;
  config.source = source;
  if (!root || root.IsNull()) return config;
  detail::read_section(root, source, "", config);
  if (config.machine_rank >= config.num_machines)
    detail::fail_at(source, root["machine_rank"].Mark(),
                    "machine_rank " + std::to_string(config.machine_rank) + " is not below num_machines " +
                        std::to_string(config.num_machines) + "; machines are numbered 0 to num_machines - 1");
  if (config.num_processes % config.num_machines != 0)
    detail::fail_at(source, root["num_processes"].Mark(),
                    "num_processes " + std::to_string(config.num_processes) + " is not a multiple of num_machines " +
                        std::to_string(config.num_machines) + "; num_processes counts the processes of all machines");
  return config;
}

ACC_DECL Config Config::from_yaml_file(const std::filesystem::path& path) {
  const auto refuse = [&](const std::string& why) {
    return Error("the config file " + path.string() + " " + why +
                 "; name a YAML file as `acc config` writes (or write one with `acc config default`)");
  };
  // Opened without blocking, so that a FIFO with no writer cannot hang the open; only a regular
  // file of bounded size is read, so that /dev/zero or a FIFO cannot take memory or time.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  const int open_error = errno;
  if (fd < 0)
    throw open_error == ENOENT ? Error("cannot read the config file " + path.string() +
                                       "; check the path, or write one with `acc config` (or `acc config default`)")
                               : refuse(std::string("cannot be opened: ") + std::strerror(open_error));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw refuse(std::string("cannot be examined: ") + std::strerror(errno));
  if (S_ISDIR(status.st_mode)) throw refuse("is a directory");
  if (!S_ISREG(status.st_mode))
    throw refuse(std::string("is ") +
                 (S_ISFIFO(status.st_mode)   ? "a FIFO (named pipe)"
                  : S_ISCHR(status.st_mode)  ? "a character device"
                  : S_ISBLK(status.st_mode)  ? "a block device"
                  : S_ISSOCK(status.st_mode) ? "a socket"
                                             : "something else") +
                 ", not a regular file");
  if (status.st_size > kMaxConfigFileBytes)
    throw refuse("is " + std::to_string(status.st_size) + " bytes; a config file is at most " +
                 std::to_string(kMaxConfigFileBytes) + " bytes (1 MiB)");
  std::string text(static_cast<std::size_t>(status.st_size), '\0');
  std::size_t size = 0;
  while (size < text.size()) {  // a file that shrank meanwhile ends early; one that grew is cut at its size
    const auto got = ::read(fd, text.data() + size, text.size() - size);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw refuse(std::string("cannot be read: ") + std::strerror(errno));
    if (got == 0) break;
    size += static_cast<std::size_t>(got);
  }
  text.resize(size);
  return from_yaml(text, path.string());
}

ACC_DECL Config Config::with_overrides(const EnvironmentLookup& lookup) const {
  Config config = *this;
  for (const auto& key : config_keys()) {
    if (key.variable.empty()) continue;
    const auto value = lookup(key.variable);
    if (!value) continue;
    if (auto refused = detail::assign(key, config, *value))
      throw Error(std::string(key.variable) + "='" + detail::printable(*value) + "': " + detail::printable(*refused));
  }
  return config;
}

ACC_DECL Config Config::with_environment(const EnvironmentLookup& lookup) const {
  Config config = with_overrides(lookup);
  if (auto use_fsdp = lookup("ACCELERATE_USE_FSDP");
      use_fsdp && detail::parse_env_bool("ACCELERATE_USE_FSDP", *use_fsdp))
    config.distributed_type = "FSDP";
  // Several processes started without a config (torchrun, a bare `acc launch`): what they run on
  // decides the strategy. The launcher's variables are read (and a bad one named) first.
  if (ProcessEnvironment::from(lookup).is_distributed() && config.distributed_type == "NO")
    config.distributed_type = config.use_cpu ? "MULTI_CPU" : "MULTI_GPU";
  return config;
}

ACC_DECL Config Config::from_environment() {
  Config base;
  if (auto file = process_variable("ACC_CONFIG_FILE"))
    base = from_yaml_file(*file);
  else if (std::filesystem::exists(default_config_file()))
    base = from_yaml_file(default_config_file());
  return base.with_environment(process_variable);
}

ACC_DECL std::string Config::to_yaml() const {
  const Config defaults;
  Config copy = *this;
  // The keys of `section` to_yaml writes, sorted as Accelerate's yaml.safe_dump writes them.
  const auto entries = [&](std::string_view section) {
    std::map<std::string, std::string> out;
    for (const auto& key : config_keys()) {
      if (key.section != section || (key.written && !key.written(*this))) continue;
      if (!key.fixed.empty()) {
        out[std::string(key.name)] = std::string(key.fixed);
        continue;
      }
      const auto value = config_value(key, *this);
      if (!value || (section == "acc" && value == config_value(key, defaults))) continue;
      out[std::string(key.name)] = detail::yaml_scalar(*value, detail::is_string_field(key, copy));
    }
    return out;
  };
  auto top = entries("");
  const auto nested = [](const std::map<std::string, std::string>& section) {
    std::string out;
    for (const auto& [name, value] : section) out += "\n  " + name + ": " + value;
    return out.empty() ? std::string(" {}") : out;
  };
  top["fsdp_config"] = nested(entries("fsdp_config"));
  if (const auto recipe = entries("fp8_config"); !recipe.empty()) top["fp8_config"] = nested(recipe);
  if (const auto sizes = entries("parallelism_config"); !sizes.empty()) top["parallelism_config"] = nested(sizes);
  if (const auto ours = entries("acc"); !ours.empty()) top["acc"] = nested(ours);
  std::string yaml;
  for (const auto& [name, value] : top)
    yaml += name + ":" + (value.rfind("\n", 0) == 0 || value == " {}" ? value : " " + value) + "\n";
  return yaml;
}

ACC_DECL std::string config_reference() {
  const Config defaults;
  std::string out;
  for (const std::string_view section : {"", "fsdp_config", "fp8_config", "parallelism_config", "acc"}) {
    out += section.empty() ? "## Top level\n\n" : "\n## " + std::string(section) + "\n\n";
    out += "| key | environment variable | values | default | what it does |\n| --- | --- | --- | --- | --- |\n";
    std::string ignored;
    for (const auto& key : config_keys()) {
      if (key.section != section) continue;
      if (key.type == ConfigType::ignored) {
        ignored += (ignored.empty() ? "" : ", ") + ("`" + std::string(key.name) + "`");
        continue;
      }
      const auto value = config_value(key, defaults);
      const std::string default_value = !key.field       ? "-"
                                        : !value         ? "unset"
                                        : value->empty() ? "empty"
                                                         : "`" + *value + "`";
      out += "| `" + std::string(key.name) + "` | " +
             (key.variable.empty() ? std::string("-") : "`" + std::string(key.variable) + "`") + " | " +
             detail::allowed_values(key, true) + " | " + default_value + " | " + std::string(key.help) + " |\n";
    }
    if (!ignored.empty())
      out += "\nAccepted and ignored (Accelerate writes them for features a C++ program has no use for): " + ignored +
             ".\n";
  }
  return out;
}

ACC_DECL std::optional<std::string> process_variable(std::string_view name) {
  if (const char* value = std::getenv(std::string(name).c_str())) return std::string(value);
  return std::nullopt;
}

ACC_DECL std::filesystem::path default_config_file() {
  const auto variable = [](const char* name) -> const char* {
    const char* value = std::getenv(name);
    return value && *value ? value : nullptr;
  };
  const auto home = [&]() -> std::filesystem::path {
    if (const char* value = variable("HOME")) return value;
    const passwd* entry = getpwuid(getuid());
    return entry ? std::filesystem::path(entry->pw_dir) : std::filesystem::path(".");
  };
  const auto expand = [&](const std::string& path) -> std::filesystem::path {
    if (path == "~") return home();
    if (path.rfind("~/", 0) == 0) return home() / path.substr(2);
    return path;
  };
  std::filesystem::path huggingface;
  if (const char* hf_home = variable("HF_HOME"))
    huggingface = expand(hf_home);
  else if (const char* cache = variable("XDG_CACHE_HOME"))
    huggingface = expand(cache) / "huggingface";
  else
    huggingface = home() / ".cache" / "huggingface";
  return huggingface / "accelerate" / "default_config.yaml";
}

}  // namespace acc
