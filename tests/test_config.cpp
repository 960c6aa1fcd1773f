#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/config/config.hpp>
#include <acc/tracking/tracker.hpp>

#include "temp_dir.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>

namespace {

// tests/data, next to this file (CMake compiles it by its absolute path).
const std::filesystem::path kData = std::filesystem::path(ACC_TESTS_DIR) / "data";

std::string error_of(const std::string& yaml) {
  try {
    acc::Config::from_yaml(yaml, "my.yaml");
  } catch (const acc::Error& e) {
    return e.what();
  }
  return "no error";
}

acc::Config with_env(const acc::Config& base, const std::map<std::string, std::string>& vars) {
  return base.with_environment([&](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

std::string env_error_of(const std::map<std::string, std::string>& vars) {
  try {
    with_env(acc::Config{}, vars);
  } catch (const acc::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("the seeds' YAML files load unchanged") {
  const auto fsdp = acc::Config::from_yaml_file(kData / "seed_fsdp_config.yaml");
  CHECK(fsdp.distributed_type == "FSDP");
  CHECK(fsdp.mixed_precision == "bf16");
  CHECK(fsdp.num_processes == 2);
  CHECK(fsdp.fsdp.sharding_strategy == "FULL_SHARD");
  CHECK(fsdp.fsdp.auto_wrap_policy == "TRANSFORMER_BASED_WRAP");
  CHECK(fsdp.fsdp.transformer_layer_cls_to_wrap == std::vector<std::string>{"BertLayer"});
  CHECK(fsdp.fsdp.backward_prefetch == "BACKWARD_PRE");
  CHECK(fsdp.fsdp.state_dict_type == "SHARDED_STATE_DICT");
  CHECK(fsdp.fsdp.sync_module_states);
  CHECK_FALSE(fsdp.fsdp.offload_params);

  const auto ddp = acc::Config::from_yaml_file(kData / "seed_multi_gpu_config.yaml");
  CHECK(ddp.distributed_type == "MULTI_GPU");
  CHECK(ddp.mixed_precision == "fp16");
  CHECK(ddp.num_processes == 2);
  CHECK_FALSE(ddp.main_process_ip.has_value());
  CHECK_FALSE(ddp.main_process_port.has_value());
}

TEST_CASE("hand-written variants, legacy spellings and our own section") {
  const auto cpu = acc::Config::from_yaml(
      "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 4\n"
      "num_machines: 2\nmachine_rank: 1\nmain_process_ip: 10.0.0.1\n"
      "main_process_port: 29501\ngradient_accumulation_steps: 8\n");
  CHECK(cpu.distributed_type == "MULTI_CPU");
  CHECK(cpu.use_cpu);
  CHECK(cpu.num_machines == 2);
  CHECK(cpu.machine_rank == 1);
  CHECK(cpu.main_process_ip == std::optional<std::string>("10.0.0.1"));
  CHECK(cpu.main_process_port == std::optional<int>(29501));
  CHECK(cpu.gradient_accumulation_steps == 8);
  CHECK(acc::Config::from_yaml("fp16: true\n").mixed_precision == "fp16");
  CHECK(acc::Config::from_yaml("fsdp_config:\n  fsdp_sharding_strategy: 2\n").fsdp.sharding_strategy ==
        "SHARD_GRAD_OP");
  CHECK(acc::Config::from_yaml("fsdp_config:\n  fsdp_reshard_after_forward: false\n").fsdp.sharding_strategy ==
        "SHARD_GRAD_OP");
  CHECK(acc::Config::from_yaml("fsdp_config:\n  fsdp_transformer_layer_cls_to_wrap: Block, Attention\n")
            .fsdp.transformer_layer_cls_to_wrap == std::vector<std::string>{"Block", "Attention"});
  const auto ours = acc::Config::from_yaml("acc:\n  bucket_cap_mb: 50\n  sampler: shuffled\n  even_batches: false\n");
  CHECK(ours.bucket_cap_mb == 50.0);
  CHECK(ours.sampler == "shuffled");
  CHECK_FALSE(ours.even_batches);
  CHECK(acc::Config::from_yaml("").distributed_type == "NO");
}

TEST_CASE("parallelism_config: more than one replica makes FSDP's sharding hybrid, as FSDP2's HSDP") {
  const auto hsdp = acc::Config::from_yaml(
      "distributed_type: FSDP\nnum_processes: 4\nparallelism_config:\n  parallelism_config_dp_replicate_size: 2\n"
      "  parallelism_config_dp_shard_size: 2\n");
  CHECK(hsdp.dp_replicate_size == 2);
  CHECK(hsdp.dp_shard_size == 2);
  CHECK(acc::fsdp_sharding_strategy(hsdp) == "HYBRID_SHARD");
  auto zero2 = hsdp;
  zero2.fsdp.sharding_strategy = "SHARD_GRAD_OP";
  CHECK(acc::fsdp_sharding_strategy(zero2) == "HYBRID_SHARD_ZERO2");
  // One replica, or none given: the strategy as fsdp_sharding_strategy says.
  CHECK(acc::fsdp_sharding_strategy(acc::Config::from_yaml(
            "parallelism_config:\n  parallelism_config_dp_replicate_size: 1\n")) == "FULL_SHARD");
  CHECK(acc::fsdp_sharding_strategy(acc::Config::from_yaml("fsdp_config:\n  fsdp_sharding_strategy: HYBRID_SHARD\n")) ==
        "HYBRID_SHARD");
  // Written back under its own section, and only when set.
  CHECK(hsdp.to_yaml().find("parallelism_config:\n  parallelism_config_cp_size: 1\n  "
                            "parallelism_config_dp_replicate_size: 2\n  parallelism_config_dp_shard_size: 2\n") !=
        std::string::npos);
  CHECK(acc::Config().to_yaml().find("parallelism_config") == std::string::npos);
  CHECK(acc::Config::from_yaml("parallelism_config:\n  parallelism_config_tp_size: 2\n").tp_size == 2);
  CHECK(error_of("parallelism_config:\n  parallelism_config_tp_size: 0\n") ==
        "my.yaml:2: 'parallelism_config.parallelism_config_tp_size' is '0'; allowed values: an integer from 1 to "
        "1048576");
  CHECK(error_of("parallelism_config:\n  parallelism_config_cp_size: 2\n") ==
        "my.yaml:2: 'parallelism_config.parallelism_config_cp_size' is '2'; allowed values: an integer from 1 to 1");
}

TEST_CASE("bad keys and values name the file, line, key and the allowed values") {
  CHECK(error_of("num_processes: 2\nmixed_precison: bf16\n") ==
        "my.yaml:2: unknown key 'mixed_precison'; did you mean 'mixed_precision'?");
  CHECK(error_of("mixed_precision: fp4\n") ==
        "my.yaml:1: 'mixed_precision' is 'fp4'; allowed values: no, fp16, bf16, fp8");
  CHECK(error_of("distributed_type: DEEPSPEED\n") ==
        "my.yaml:1: 'distributed_type' is 'DEEPSPEED'; allowed values: NO, MULTI_CPU, MULTI_GPU, FSDP");
  CHECK(error_of("num_processes: two\n") ==
        "my.yaml:1: 'num_processes' is 'two'; allowed values: an integer from 1 to 1048576");
  CHECK(error_of("use_cpu: maybe\n") == "my.yaml:1: 'use_cpu' is 'maybe'; allowed values: true, false");
  CHECK(error_of("fsdp_config:\n  fsdp_sharding_strategy: HALF\n") ==
        "my.yaml:2: 'fsdp_config.fsdp_sharding_strategy' is 'HALF'; allowed values: FULL_SHARD, SHARD_GRAD_OP, "
        "NO_SHARD, HYBRID_SHARD, HYBRID_SHARD_ZERO2, 1, 2, 3, 4, 5");
  CHECK(error_of("fsdp_config:\n  fsdp_ofload_params: true\n") ==
        "my.yaml:2: unknown key 'fsdp_config.fsdp_ofload_params'; did you mean 'fsdp_config.fsdp_offload_params'?");
  CHECK(error_of("deepspeed_config:\n  zero_stage: 2\n") ==
        "my.yaml:2: 'deepspeed_config' is not supported by accelerate-cpp; remove it (use FSDP or MULTI_GPU)");
  CHECK(error_of("num_machines: 2\nmachine_rank: 2\n") ==
        "my.yaml:2: machine_rank 2 is not below num_machines 2; machines are numbered 0 to num_machines - 1");
  CHECK(error_of("num_machines: 2\nnum_processes: 3\n") ==
        "my.yaml:2: num_processes 3 is not a multiple of num_machines 2; num_processes counts the processes of all "
        "machines");
  CHECK(error_of("mixed_precision: [bf16]\n") == "my.yaml:1: 'mixed_precision' must be a single value");
  CHECK(error_of("num_processes: 2\n  bad indent: x\n").find("my.yaml:2: not valid YAML") == 0);
  CHECK_THROWS_WITH_AS(acc::Config::from_yaml_file("/nonexistent/acc.yaml"),
                       "cannot read the config file /nonexistent/acc.yaml; check the path, or write one with `acc "
                       "config` (or `acc config default`)",
                       acc::Error);
}

TEST_CASE("the environment overrides the file, and a bad value names the variable") {
  const auto file = acc::Config::from_yaml(
      "mixed_precision: fp16\nuse_cpu: false\nfsdp_config:\n"
      "  fsdp_sharding_strategy: FULL_SHARD\n  fsdp_offload_params: true\n");
  const auto config = with_env(file, {{"ACCELERATE_MIXED_PRECISION", "bf16"},
                                      {"ACCELERATE_USE_CPU", "1"},
                                      {"FSDP_SHARDING_STRATEGY", "NO_SHARD"},
                                      {"ACCELERATE_USE_FSDP", "true"}});
  CHECK(config.mixed_precision == "bf16");
  CHECK(config.use_cpu);
  CHECK(config.distributed_type == "FSDP");
  CHECK(config.fsdp.sharding_strategy == "NO_SHARD");
  CHECK(config.fsdp.offload_params);  // not overridden
  CHECK(with_env(file, {}).mixed_precision == "fp16");
  CHECK(
      with_env(acc::Config{}, {{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"ACCELERATE_USE_CPU", "true"}}).distributed_type ==
      "MULTI_CPU");
  CHECK(with_env(acc::Config{}, {{"WORLD_SIZE", "2"}, {"RANK", "0"}}).distributed_type == "MULTI_GPU");
  CHECK(env_error_of({{"ACCELERATE_MIXED_PRECISION", "fp4"}}) ==
        "ACCELERATE_MIXED_PRECISION='fp4': 'mixed_precision' is 'fp4'; allowed values: no, fp16, bf16, fp8");
  CHECK(env_error_of({{"FSDP_BACKWARD_PREFETCH", "SOON"}}) ==
        "FSDP_BACKWARD_PREFETCH='SOON': 'fsdp_config.fsdp_backward_prefetch' is 'SOON'; allowed values: BACKWARD_PRE, "
        "BACKWARD_POST, NO_PREFETCH");
  CHECK(env_error_of({{"ACCELERATE_USE_FSDP", "sure"}}) ==
        "ACCELERATE_USE_FSDP='sure' is not a boolean; use true/false (or 1/0, yes/no)");
}

TEST_CASE("the collective timeout: acc.collective_timeout, overridden by ACC_COLLECTIVE_TIMEOUT") {
  CHECK_FALSE(acc::Config::from_yaml("debug: true\n").collective_timeout.has_value());
  const auto file = acc::Config::from_yaml("debug: true\nacc:\n  collective_timeout: 60\n");
  CHECK(file.collective_timeout == std::optional<int>(60));
  CHECK(file.debug);
  CHECK(with_env(file, {{"ACC_COLLECTIVE_TIMEOUT", "5"}}).collective_timeout == std::optional<int>(5));
  CHECK(with_env(file, {{"ACC_COLLECTIVE_TIMEOUT", "5"}, {"ACCELERATE_MIXED_PRECISION", "bf16"}}).mixed_precision ==
        "bf16");
  CHECK_FALSE(with_env(file, {{"ACCELERATE_DEBUG_MODE", "0"}}).debug);
  CHECK(error_of("acc:\n  collective_timeout: 0\n") ==
        "my.yaml:2: 'acc.collective_timeout' is '0'; allowed values: an integer from 1 to 16777216");
  CHECK(env_error_of({{"ACC_COLLECTIVE_TIMEOUT", "soon"}}) ==
        "ACC_COLLECTIVE_TIMEOUT='soon': 'acc.collective_timeout' is 'soon'; allowed values: an integer from 1 to "
        "16777216");
}

// Inputs the config fuzzer (bench/fuzz) found: each was a crash or was silently accepted.
TEST_CASE("keys that are not names, and a section that is not a mapping, are errors") {
  CHECK(error_of("[a, b]: 1\n") ==
        "my.yaml:1: the config has a key that is not a name (a list, a mapping or nothing); keys are names such as "
        "'mixed_precision'");
  CHECK(error_of("? {dule_states: true}\n: x\n").find("has a key that is not a name") != std::string::npos);
  CHECK(error_of("acc:\n  ? [x]\n  : 1\n").find("my.yaml:2: 'acc' has a key that is not a name") == 0);
  CHECK(error_of("fsdp_config: abc\n") == "my.yaml:1: 'fsdp_config' must be a mapping of keys to values");
}

TEST_CASE("the default file: HF_HOME, then XDG_CACHE_HOME, then HOME") {
  const auto keep = [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  const auto hf = keep("HF_HOME"), xdg = keep("XDG_CACHE_HOME"), home = keep("HOME");
  setenv("HF_HOME", "/h", 1);
  setenv("XDG_CACHE_HOME", "/x", 1);
  setenv("HOME", "/home/u", 1);
  CHECK(acc::default_config_file() == "/h/accelerate/default_config.yaml");
  unsetenv("HF_HOME");
  CHECK(acc::default_config_file() == "/x/huggingface/accelerate/default_config.yaml");
  unsetenv("XDG_CACHE_HOME");
  CHECK(acc::default_config_file() == "/home/u/.cache/huggingface/accelerate/default_config.yaml");
  const auto restore = [](const char* name, const std::optional<std::string>& v) {
    if (v)
      setenv(name, v->c_str(), 1);
    else
      unsetenv(name);
  };
  restore("HF_HOME", hf);
  restore("XDG_CACHE_HOME", xdg);
  restore("HOME", home);
}

// Found: a repeated key silently took the last value.
TEST_CASE("a key given twice is an error naming both lines") {
  CHECK(error_of("num_processes: 2\nuse_cpu: true\nnum_processes: 3\n") ==
        "my.yaml:3: 'num_processes' is given twice, on lines 1 and 3; keep one of them");
  CHECK(error_of("fsdp_config:\n  fsdp_offload_params: true\n  fsdp_offload_params: false\n") ==
        "my.yaml:3: 'fsdp_config.fsdp_offload_params' is given twice, on lines 2 and 3; keep one of them");
  CHECK(error_of("acc: {sampler: shuffled, sampler: sequential}\n") ==
        "my.yaml:1: 'acc.sampler' is given twice, on lines 1 and 1; keep one of them");
}

// Found: a directory read as an empty config, /dev/zero ended in bad_alloc, a FIFO hung.
TEST_CASE("a config file must be a regular file of at most 1 MiB") {
  TempDir dir("acc_config");
  const auto error_reading = [](const std::filesystem::path& path) {
    try {
      acc::Config::from_yaml_file(path);
    } catch (const acc::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string fix = "; name a YAML file as `acc config` writes (or write one with `acc config default`)";
  CHECK(error_reading(dir.path) == "the config file " + dir.path.string() + " is a directory" + fix);
  CHECK(error_reading("/dev/zero") == "the config file /dev/zero is a character device, not a regular file" + fix);
  const auto fifo = dir.path / "fifo.yaml";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(error_reading(fifo) ==
        "the config file " + fifo.string() + " is a FIFO (named pipe), not a regular file" + fix);
  const auto big = dir.path / "big.yaml";
  write_text(big, "num_processes: 2\n" + std::string(1 << 20, '#'));
  CHECK(error_reading(big) ==
        "the config file " + big.string() + " is 1048593 bytes; a config file is at most 1048576 bytes (1 MiB)" + fix);
  const auto largest = dir.path / "largest.yaml";
  write_text(largest, "num_processes: 2\n#" + std::string((1 << 20) - 18, ' '));
  CHECK(acc::Config::from_yaml_file(largest).num_processes == 2);
}

TEST_CASE("messages quote what a junk file holds as printable text") {
  CHECK(error_of(std::string("\x89PNG\x01\xff: 1\n")).find("my.yaml:1: unknown key '\\x89PNG\\x01\\xff'") == 0);
  CHECK(error_of("mixed_precision: \"\\x1b[31m\"\n") ==
        "my.yaml:1: 'mixed_precision' is '\\x1b[31m'; allowed values: no, fp16, bf16, fp8");
}

// Found: WORLD_SIZE=two on a build without NCCL said "no Accelerator for distributed_type=MULTI_GPU".
TEST_CASE("a bad launcher variable is named by the environment overrides, before any strategy is chosen") {
  CHECK(env_error_of({{"WORLD_SIZE", "two"}, {"RANK", "0"}}) ==
        "WORLD_SIZE='two' is not an integer; set it to the total number of processes");
  CHECK(env_error_of({{"WORLD_SIZE", "2"}, {"RANK", "2"}}) ==
        "rank 2 (from torchrun variables) is not below the world size 2; ranks run from 0 to world size - 1");
  CHECK(env_error_of({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "99999"}}) ==
        "MASTER_PORT=99999 is out of range [1, 65535]; set it to a free TCP port on rank 0's machine");
}

// One value for every key with a field, none of them the default, so that a round trip shows each.
acc::Config every_key_set() {
  return acc::Config::from_yaml(
      "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nmixed_precision: fp8\nuse_cpu: true\n"
      "num_processes: 8\nnum_machines: 2\nmachine_rank: 1\nmain_process_ip: node-0.example\n"
      "main_process_port: 1234\ngpu_ids: 0,1,2,3\nrdzv_backend: c10d\nsame_network: false\n"
      "main_training_function: train\ndowncast_bf16: 'yes'\ndebug: true\ngradient_accumulation_steps: 4\n"
      "fsdp_config:\n  fsdp_sharding_strategy: NO_SHARD\n  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
      "  fsdp_transformer_layer_cls_to_wrap: Block, acc::Attention\n  fsdp_backward_prefetch: NO_PREFETCH\n"
      "  fsdp_forward_prefetch: true\n  fsdp_state_dict_type: SHARDED_STATE_DICT\n  fsdp_offload_params: true\n"
      "  fsdp_sync_module_states: false\n  fsdp_use_orig_params: false\n  fsdp_cpu_ram_efficient_loading: true\n"
      "  fsdp_activation_checkpointing: true\n"
      "fp8_config:\n  backend: TE\n  fp8_format: E4M3\n  amax_history_len: 16\n  amax_compute_algorithm: max\n"
      "  margin: 2\n"
      "parallelism_config:\n  parallelism_config_dp_replicate_size: 2\n  parallelism_config_dp_shard_size: 4\n"
      "  parallelism_config_tp_size: 2\n  parallelism_config_cp_size: 1\n"
      "acc:\n  bucket_cap_mb: 12.5\n  first_bucket_cap_mb: 0.25\n  find_unused_parameters: true\n  static_graph: true\n"
      "  collective_timeout: 60\n  sampler: shuffled\n  even_batches: false\n  split_batches: true\n"
      "  log_with: [jsonl, csv]\n  ddp_comm_hook: power_sgd\n  power_sgd_rank: 4\n  power_sgd_start_iter: 10\n"
      "  power_sgd_min_compression_rate: 1.5\n  power_sgd_warm_start: false\n  power_sgd_error_feedback: false\n",
      "every.yaml");
}

TEST_CASE("to_yaml writes what from_yaml reads back, key by key") {
  const auto config = every_key_set();
  const auto again = acc::Config::from_yaml(config.to_yaml(), "again.yaml");
  const acc::Config defaults;
  int compared = 0;
  for (const auto& key : acc::config_keys()) {
    const auto value = acc::config_value(key, config);
    if (!value) continue;  // a key without a field (fp16, tpu_env)
    CAPTURE(key.qualified());
    CHECK(acc::config_value(key, again) == value);
    // Every key is set, but for those with a single value and the one TRANSFORMER_BASED_WRAP leaves out.
    if (key.name != "compute_environment" && key.name != "fsdp_min_num_params" &&
        key.name != "parallelism_config_cp_size")
      CHECK(value != acc::config_value(key, defaults));
    ++compared;
  }
  CHECK(compared == 53);
  // min_num_params is written for SIZE_BASED_WRAP only, as Accelerate writes it.
  auto size_based = acc::Config::from_yaml(
      "distributed_type: FSDP\nfsdp_config:\n  fsdp_auto_wrap_policy: "
      "SIZE_BASED_WRAP\n  fsdp_min_num_params: 1000\n");
  CHECK(acc::Config::from_yaml(size_based.to_yaml()).fsdp.min_num_params == 1000);
  CHECK(size_based.to_yaml().find("fsdp_transformer_layer_cls_to_wrap") == std::string::npos);
}

TEST_CASE("to_yaml has Accelerate's layout: sorted keys, 'no' quoted, fsdp_config only for FSDP, acc only when set") {
  CHECK(acc::Config().to_yaml() ==
        "compute_environment: LOCAL_MACHINE\ndebug: false\ndistributed_type: 'NO'\ndowncast_bf16: 'no'\n"
        "fsdp_config: {}\ngradient_accumulation_steps: 1\nmachine_rank: 0\nmain_training_function: main\n"
        "mixed_precision: 'no'\nnum_machines: 1\nnum_processes: 1\nrdzv_backend: static\nsame_network: true\n"
        "tpu_env: []\ntpu_use_cluster: false\ntpu_use_sudo: false\nuse_cpu: false\n");
  auto config = acc::Config::from_yaml("acc: {sampler: shuffled}\nmain_process_ip: \"it's\"\n");
  const auto yaml = config.to_yaml();
  CHECK(yaml.rfind("acc:\n  sampler: shuffled\ncompute_environment:", 0) == 0);
  CHECK(yaml.find("main_process_ip: 'it''s'\n") != std::string::npos);
  CHECK(acc::Config::from_yaml(yaml).main_process_ip == std::optional<std::string>("it's"));
}

TEST_CASE("the schema: each key once, each variable once, and log_with's names are the trackers'") {
  std::set<std::string> keys, variables;
  for (const auto& key : acc::config_keys()) {
    CAPTURE(key.qualified());
    CHECK(keys.insert(key.qualified()).second);
    if (!key.variable.empty()) CHECK(variables.insert(std::string(key.variable)).second);
  }
  const auto log_with = std::find_if(acc::config_keys().begin(), acc::config_keys().end(),
                                     [](const acc::ConfigKey& key) { return key.name == "log_with"; });
  REQUIRE(log_with != acc::config_keys().end());
  std::vector<std::string> trackers{"all"};
  trackers.insert(trackers.end(), acc::kTrackerNames.begin(), acc::kTrackerNames.end());
  CHECK(log_with->allowed == trackers);
}

// Found: acc launch read ACCELERATE_USE_CPU on its own, taking 'maybe' for false.
TEST_CASE("with_overrides applies the schema's variables only, each checked as its key") {
  const auto overridden = acc::Config().with_overrides([](std::string_view name) -> std::optional<std::string> {
    if (name == "ACCELERATE_USE_CPU") return "yes";
    if (name == "WORLD_SIZE") return "not read here";
    return std::nullopt;
  });
  CHECK(overridden.use_cpu);
  CHECK(overridden.distributed_type == "NO");
  CHECK(env_error_of({{"ACCELERATE_USE_CPU", "maybe"}}) ==
        "ACCELERATE_USE_CPU='maybe': 'use_cpu' is 'maybe'; allowed values: true, false");
  CHECK(with_env(acc::Config{}, {{"ACC_LOG_WITH", "jsonl, csv"}}).log_with == std::vector<std::string>{"jsonl", "csv"});
}
