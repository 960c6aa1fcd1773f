// acc::Config: the settings Python Accelerate's `accelerate config` writes (the same YAML keys,
// so an Accelerate YAML loads unchanged), plus an `acc:` section for what has no Accelerate key.
// Read from a YAML file, then overridden by the environment that `acc launch` (or the user) sets.
// Every bad key or value is an acc::Error naming the file, line, key and the allowed values.
// One table, config_keys(), says for every key its environment variable, type, allowed values
// and help; it drives reading, the environment overrides, to_yaml, `acc env` and the reference
// (docs/config_reference.md, written by `acc config --reference`). Free of libtorch, so that the
// `acc` tool can use it too.
//
// A new key: a member here, and a row in config_keys() (impl/config.ipp); then regenerate the
// reference (tests/cmake/config_reference.cmake says how).
#pragma once

#include <acc/config/environment.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace acc {

struct FsdpConfig {
  std::string sharding_strategy = "FULL_SHARD";
  std::string auto_wrap_policy = "NO_WRAP";
  std::vector<std::string> transformer_layer_cls_to_wrap;
  int64_t min_num_params = 100000000;
  std::string backward_prefetch = "BACKWARD_PRE";
  bool forward_prefetch = false;
  std::string state_dict_type = "FULL_STATE_DICT";
  bool offload_params = false;
  bool sync_module_states = true;
  bool use_orig_params = true;
  bool cpu_ram_efficient_loading = false;  // as Python's plugin when the key is absent
  bool activation_checkpointing = false;
};

// fp8_config: what mixed_precision fp8 does (acc::FP8Recipe). The backend names whose recipe to
// follow: AO (torchao's dynamic tensorwise scaling) or TE (TransformerEngine's delayed scaling
// with an amax history); the kernels are accelerate-cpp's own either way.
struct Fp8Config {
  std::string backend = "AO";
  std::string fp8_format = "HYBRID";
  int amax_history_len = 1024;
  std::string amax_compute_algorithm = "most_recent";
  int margin = 0;
};

// A config is a few hundred bytes; anything above this is not one (and /dev/zero is refused).
inline constexpr long kMaxConfigFileBytes = 1 << 20;

struct Config {
  std::string compute_environment = "LOCAL_MACHINE";
  std::string distributed_type = "NO";
  std::string mixed_precision = "no";
  bool use_cpu = false;
  int num_processes = 1;
  int num_machines = 1;
  int machine_rank = 0;
  std::optional<std::string> main_process_ip;
  std::optional<int> main_process_port;
  std::optional<std::string> gpu_ids;  // unset: all
  std::string rdzv_backend = "static";
  bool same_network = true;
  std::string main_training_function = "main";
  std::string downcast_bf16 = "no";
  bool debug = false;
  int gradient_accumulation_steps = 1;
  FsdpConfig fsdp;
  Fp8Config fp8;
  // parallelism_config (Accelerate 1.x's ParallelismConfig): data-parallel replicas and the ranks
  // each shards over; with FSDP and more than one replica, hybrid sharding. Unset: not given.
  std::optional<int> dp_replicate_size;
  std::optional<int> dp_shard_size;
  int tp_size = 1;  // tensor parallelism (acc::DeviceMesh's tp dimension)
  int cp_size = 1;  // context parallelism: not built yet, only 1
  // The `acc:` section.
  double bucket_cap_mb = 25.0;
  double first_bucket_cap_mb = 1.0;
  bool find_unused_parameters = false;
  bool static_graph = false;
  // DDP's communication hook (the name of one acc::run was given: no, fp16, bf16, power_sgd,
  // batched_power_sgd, or a user hook's), and PowerSGD's settings (acc::PowerSGDOptions).
  std::string ddp_comm_hook = "no";
  int power_sgd_rank = 1;
  int power_sgd_start_iter = 1000;
  double power_sgd_min_compression_rate = 2.0;
  bool power_sgd_warm_start = true;
  bool power_sgd_error_feedback = true;
  std::optional<int> collective_timeout;  // seconds; unset: ProcessGroupOptions' default
  std::string sampler = "sequential";
  bool even_batches = true;
  bool split_batches = false;
  std::vector<std::string> log_with;
  // Where the settings came from, for messages: a file path, or "defaults".
  std::string source = "defaults";

  static Config from_yaml(const std::string& text, const std::string& source = "<string>");
  // A regular file of at most kMaxConfigFileBytes; anything else is an error naming what it is.
  static Config from_yaml_file(const std::filesystem::path& path);
  // The variables of config_keys() that are set override the keys they stand for.
  Config with_overrides(const EnvironmentLookup& lookup) const;
  // with_overrides, then what the launcher's variables imply: ACCELERATE_USE_FSDP, and several
  // processes (WORLD_SIZE, ...; a bad one is named) without a distributed_type.
  Config with_environment(const EnvironmentLookup& lookup) const;
  // The job's settings: the file named by ACC_CONFIG_FILE (set by `acc launch --config_file`) or
  // the default file if it exists, then the environment.
  static Config from_environment();
  // The YAML `acc config` writes, with the layout of Accelerate's: its keys sorted, fsdp_config
  // filled for FSDP only, the `acc:` section only with what differs from the defaults.
  std::string to_yaml() const;
};

// The FSDP sharding strategy the config asks for: fsdp_sharding_strategy, made hybrid by FSDP2's
// spelling, parallelism_config_dp_replicate_size above 1 (FULL_SHARD is then HYBRID_SHARD,
// SHARD_GRAD_OP HYBRID_SHARD_ZERO2).
inline std::string fsdp_sharding_strategy(const Config& config) {
  const auto& strategy = config.fsdp.sharding_strategy;
  if (config.dp_replicate_size.value_or(1) <= 1) return strategy;
  if (strategy == "FULL_SHARD") return "HYBRID_SHARD";
  if (strategy == "SHARD_GRAD_OP") return "HYBRID_SHARD_ZERO2";
  return strategy;
}

// --- The schema: one row per key.

enum class ConfigType {
  text,         // any single value
  choice,       // one of `allowed`
  flag,         // a boolean, as Accelerate spells them (parse_bool)
  integer,      // from `min` to `max`
  number,       // a real number of at least `min`
  names,        // a list, or names separated by commas; each one of `allowed` when there are any
  mapping,      // a section of keys (fsdp_config, parallelism_config, acc)
  ignored,      // Accelerate's, for features a C++ program has no use for: any value
  unsupported,  // an error unless empty (deepspeed_config)
};

// Where a key's value lives in a Config.
using ConfigField = std::variant<std::string*, bool*, int*, int64_t*, double*, std::optional<std::string>*,
                                 std::optional<int>*, std::vector<std::string>*>;

struct ConfigKey {
  std::string_view section;   // "" at the top level, else "fsdp_config" or "acc"
  std::string_view name;      // as the YAML spells it
  std::string_view variable;  // the environment variable that overrides it, or ""
  ConfigType type = ConfigType::text;
  std::vector<std::string> allowed;  // choice and names
  int64_t min = 0, max = 0;          // integer: the range; number: the least
  std::string_view values;           // the values, in words, where the type does not say them
  std::string_view help;
  ConfigField (*field)(Config&) = nullptr;              // none: accepted and dropped
  void (*read)(Config&, const std::string&) = nullptr;  // a key with a spelling of its own (fp16)
  bool (*written)(const Config&) = nullptr;             // to_yaml writes it only when this holds
  std::string_view fixed;                               // what to_yaml writes for a key without a field

  // "fsdp_config.fsdp_offload_params"
  std::string qualified() const {
    return section.empty() ? std::string(name) : std::string(section) + "." + std::string(name);
  }
};

ACC_DECL const std::vector<ConfigKey>& config_keys();
// The keys of docs/config_reference.md, as Markdown tables (what `acc config --reference` prints).
ACC_DECL std::string config_reference();
// The value of `key` in `config` as the YAML spells it ("bf16", "true", "jsonl,csv"); nothing
// for an unset optional value or a key without a field.
ACC_DECL std::optional<std::string> config_value(const ConfigKey& key, const Config& config);

// The EnvironmentLookup of this process's variables.
ACC_DECL std::optional<std::string> process_variable(std::string_view name);

// Accelerate's default config file: $HF_HOME/accelerate, else
// $XDG_CACHE_HOME/huggingface/accelerate, else ~/.cache/huggingface/accelerate (an empty variable
// counts as unset; a leading ~ is the home folder, as Python's expanduser has it).
ACC_DECL std::filesystem::path default_config_file();

namespace detail {
// `text` with every byte outside printable ASCII as \xNN, for messages that quote what a file or
// a person wrote (a junk file must not put raw bytes on the terminal).
ACC_DECL std::string printable(std::string_view text);
}  // namespace detail

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/config/impl/config.ipp>
#endif
