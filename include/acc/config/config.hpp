// acc::Config: the settings Python Accelerate's `accelerate config` writes (the same YAML keys,
// so an Accelerate YAML loads unchanged), plus an `acc:` section for what has no Accelerate key.
// Read from a YAML file, then overridden by the environment that `acc launch` (or the user) sets.
// Every bad key or value is an acc::Error naming the file, line, key and the allowed values.
// Free of libtorch, so that the `acc` tool can use it too.
#pragma once

#include <acc/config/environment.hpp>
#include <acc/error.hpp>
#include <acc/tracking/tracker.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace acc {

struct FsdpConfig {
  std::string sharding_strategy = "FULL_SHARD";  // FULL_SHARD SHARD_GRAD_OP NO_SHARD HYBRID_SHARD
  std::string auto_wrap_policy = "NO_WRAP";      // TRANSFORMER_BASED_WRAP SIZE_BASED_WRAP NO_WRAP
  std::vector<std::string> transformer_layer_cls_to_wrap;
  int64_t min_num_params = 100000000;
  std::string backward_prefetch = "BACKWARD_PRE";  // BACKWARD_PRE BACKWARD_POST NO_PREFETCH
  bool forward_prefetch = false;
  std::string state_dict_type = "FULL_STATE_DICT";  // FULL_STATE_DICT SHARDED_STATE_DICT
  bool offload_params = false;
  bool sync_module_states = true;
  bool use_orig_params = true;
  bool cpu_ram_efficient_loading = true;
  bool activation_checkpointing = false;
};

// A config is a few hundred bytes; anything above this is not one (and /dev/zero is refused).
inline constexpr long kMaxConfigFileBytes = 1 << 20;

struct Config {
  std::string compute_environment = "LOCAL_MACHINE";
  std::string distributed_type = "NO";  // NO MULTI_CPU MULTI_GPU FSDP
  std::string mixed_precision = "no";   // no fp16 bf16
  bool use_cpu = false;
  int num_processes = 1;
  int num_machines = 1;
  int machine_rank = 0;
  std::optional<std::string> main_process_ip;
  std::optional<int> main_process_port;
  std::string gpu_ids = "all";
  std::string rdzv_backend = "static";
  bool same_network = true;
  std::string main_training_function = "main";
  std::string downcast_bf16 = "no";
  bool debug = false;  // compare every collective across ranks first (ACCELERATE_DEBUG_MODE)
  int gradient_accumulation_steps = 1;
  FsdpConfig fsdp;
  // The `acc:` section.
  double bucket_cap_mb = 25.0;
  double first_bucket_cap_mb = 1.0;
  bool find_unused_parameters = false;
  std::optional<int> collective_timeout;  // seconds (ACC_COLLECTIVE_TIMEOUT); unset: 1800
  std::string sampler = "sequential";     // sequential shuffled
  bool even_batches = true;
  bool split_batches = false;
  std::vector<std::string> log_with;  // tracker names (AcceleratorOptions().log_with)
  // Where the settings came from, for messages: a file path, or "defaults".
  std::string source = "defaults";

  static Config from_yaml(const std::string& text, const std::string& source = "<string>");
  static Config from_yaml_file(const std::filesystem::path& path);
  // Applies ACCELERATE_* / FSDP_* / ACC_* variables (what `acc launch` exports) on top.
  Config with_environment(const std::function<std::optional<std::string>(std::string_view)>& lookup) const;
  // The job's settings: the file named by ACC_CONFIG_FILE (set by `acc launch --config_file`) or
  // the default file if it exists, then the environment.
  static Config from_environment();
};

// Accelerate's default config file: $HF_HOME/accelerate, else
// $XDG_CACHE_HOME/huggingface/accelerate, else ~/.cache/huggingface/accelerate (an empty variable
// counts as unset; a leading ~ is the home folder, as Python's expanduser has it).
inline std::filesystem::path default_config_file() {
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

namespace detail {

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

inline std::string join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : std::string(separator)) + item;
  return out;
}

// `text` with every byte outside printable ASCII as \xNN, for messages that quote what a file or
// a person wrote (a junk file must not put raw bytes on the terminal).
inline std::string printable(std::string_view text) {
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

// A value for a YAML document, single-quoted.
inline std::string yaml_quoted(const std::string& value) {
  std::string out = "'";
  for (char c : value) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Reads one YAML mapping, key by key, with messages that say where.
class YamlSection {
 public:
  YamlSection(const YAML::Node& node, std::string source, std::string prefix)
      : node_(node), source_(std::move(source)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& message) const {
    const auto mark = at.Mark();
    throw Error(source_ + (mark.is_null() ? "" : ":" + std::to_string(mark.line + 1)) + ": " + printable(message));
  }
  std::string name(const std::string& key) const { return prefix_ + key; }
  // "the config", or the section's key in quotes ('fsdp_config').
  std::string section() const {
    return prefix_.empty() ? "the config" : "'" + prefix_.substr(0, prefix_.size() - 1) + "'";
  }

  // Calls handler(key, value) for every entry; a key not in `known` is an error that suggests the
  // nearest known one, and a key given twice is an error naming both lines (YAML readers differ
  // on which one wins).
  void each(const std::vector<std::string>& known,
            const std::function<void(const std::string&, const YAML::Node&)>& handler) const {
    if (!node_.IsMap()) fail(node_, section() + " must be a mapping of keys to values");
    std::map<std::string, YAML::Mark> seen;
    for (const auto& entry : node_) {
      if (!entry.first.IsScalar())  // "? {a: 1}: x" or "[a]: x" (found by fuzzing)
        fail(entry.first, section() +
                              " has a key that is not a name (a list, a mapping or nothing); keys are names such as "
                              "'mixed_precision'");
      const auto key = entry.first.as<std::string>();
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string nearest = known.front();
        for (const auto& k : known)
          if (edit_distance(key, k) < edit_distance(key, nearest)) nearest = k;
        fail(entry.first, "unknown key '" + name(key) + "'; did you mean '" + name(nearest) + "'?");
      }
      const auto [first, unique] = seen.emplace(key, entry.first.Mark());
      if (!unique)
        fail(entry.first, "'" + name(key) + "' is given twice, on lines " + std::to_string(first->second.line + 1) +
                              " and " + std::to_string(entry.first.Mark().line + 1) + "; keep one of them");
      handler(key, entry.second);
    }
  }

  std::string text(const std::string& key, const YAML::Node& value) const {
    if (!value.IsScalar()) fail(value, "'" + name(key) + "' must be a single value");
    return value.as<std::string>();
  }
  std::string choice(const std::string& key, const YAML::Node& value, const std::vector<std::string>& allowed) const {
    const auto v = text(key, value);
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
      fail(value, "'" + name(key) + "' is '" + v + "'; allowed values: " + join(allowed));
    return v;
  }
  bool flag(const std::string& key, const YAML::Node& value) const {
    const auto v = text(key, value);
    if (auto parsed = parse_bool(v)) return *parsed;
    fail(value, "'" + name(key) + "' is '" + v + "'; allowed values: true, false");
  }
  int64_t integer(const std::string& key, const YAML::Node& value, int64_t min, int64_t max) const {
    const auto v = text(key, value);
    std::size_t used = 0;
    int64_t parsed = 0;
    try {
      parsed = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != v.size() || parsed < min || parsed > max)
      fail(value, "'" + name(key) + "' is '" + v + "'; allowed values: an integer from " + std::to_string(min) +
                      " to " + std::to_string(max));
    return parsed;
  }
  double number(const std::string& key, const YAML::Node& value, double min) const {
    const auto v = text(key, value);
    std::size_t used = 0;
    double parsed = 0;
    try {
      parsed = std::stod(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != v.size() || parsed < min)
      fail(value, "'" + name(key) + "' is '" + v + "'; allowed values: a number of at least " + std::to_string(min));
    return parsed;
  }

 private:
  YAML::Node node_;
  std::string source_;
  std::string prefix_;
};

// Tracker names: a YAML list, or one string with names separated by commas ("jsonl,tensorboard").
inline std::vector<std::string> read_log_with(const YamlSection& section, const std::string& key,
                                              const YAML::Node& value) {
  std::vector<std::string> allowed{"all"};
  allowed.insert(allowed.end(), kTrackerNames.begin(), kTrackerNames.end());
  std::vector<std::string> names;
  const auto add = [&](const YAML::Node& at, std::string text) {
    for (std::size_t start = 0; start <= text.size();) {
      const auto end = std::min(text.find(',', start), text.size());
      auto name = text.substr(start, end - start);
      name.erase(0, name.find_first_not_of(' '));
      name.erase(name.find_last_not_of(' ') + 1);
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
        section.fail(at, "'" + section.name(key) + "' names the tracker '" + name +
                             "'; allowed values: " + join(allowed) + " (a list, or names separated by commas)");
      names.push_back(name);
      start = end + 1;
    }
  };
  if (value.IsSequence())
    for (const auto& item : value) add(item, section.text(key, item));
  else if (!value.IsNull())
    add(value, section.text(key, value));
  return names;
}

inline const std::vector<std::string> kDistributedTypes{"NO", "MULTI_CPU", "MULTI_GPU", "FSDP"};
inline const std::vector<std::string> kMixedPrecisions{"no", "fp16", "bf16"};
// The sharding strategies by name, and by the numbers older Accelerate versions wrote (1-5).
inline const std::vector<std::string> kShardingStrategies{"FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD",
                                                          "HYBRID_SHARD_ZERO2"};

inline void read_fsdp(const YamlSection& section, FsdpConfig& fsdp) {
  section.each(
      {"fsdp_sharding_strategy", "fsdp_reshard_after_forward", "fsdp_auto_wrap_policy",
       "fsdp_transformer_layer_cls_to_wrap", "fsdp_min_num_params", "fsdp_backward_prefetch",
       "fsdp_backward_prefetch_policy", "fsdp_forward_prefetch", "fsdp_state_dict_type", "fsdp_offload_params",
       "fsdp_sync_module_states", "fsdp_use_orig_params", "fsdp_cpu_ram_efficient_loading",
       "fsdp_activation_checkpointing", "fsdp_version"},
      [&](const std::string& key, const YAML::Node& value) {
        if (key == "fsdp_sharding_strategy") {
          const auto v = section.text(key, value);
          if (v.size() == 1 && v[0] >= '1' && v[0] <= '5')
            fsdp.sharding_strategy = kShardingStrategies[static_cast<std::size_t>(v[0] - '1')];
          else
            fsdp.sharding_strategy = section.choice(key, value, kShardingStrategies);
        } else if (key == "fsdp_reshard_after_forward") {  // FSDP2's spelling
          fsdp.sharding_strategy = section.flag(key, value) ? "FULL_SHARD" : "SHARD_GRAD_OP";
        } else if (key == "fsdp_auto_wrap_policy") {
          fsdp.auto_wrap_policy = section.choice(key, value, {"TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"});
        } else if (key == "fsdp_transformer_layer_cls_to_wrap") {
          fsdp.transformer_layer_cls_to_wrap.clear();
          const auto v = section.text(key, value);
          for (std::size_t start = 0; start <= v.size();) {
            const auto end = std::min(v.find(',', start), v.size());
            auto name = v.substr(start, end - start);
            name.erase(0, name.find_first_not_of(' '));
            name.erase(name.find_last_not_of(' ') + 1);
            if (!name.empty()) fsdp.transformer_layer_cls_to_wrap.push_back(name);
            start = end + 1;
          }
        } else if (key == "fsdp_min_num_params") {
          fsdp.min_num_params = section.integer(key, value, 0, INT64_MAX);
        } else if (key == "fsdp_backward_prefetch" || key == "fsdp_backward_prefetch_policy") {
          fsdp.backward_prefetch = section.choice(key, value, {"BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"});
        } else if (key == "fsdp_forward_prefetch") {
          fsdp.forward_prefetch = section.flag(key, value);
        } else if (key == "fsdp_state_dict_type") {
          fsdp.state_dict_type =
              section.choice(key, value, {"FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT"});
        } else if (key == "fsdp_offload_params") {
          fsdp.offload_params = section.flag(key, value);
        } else if (key == "fsdp_sync_module_states") {
          fsdp.sync_module_states = section.flag(key, value);
        } else if (key == "fsdp_use_orig_params") {
          fsdp.use_orig_params = section.flag(key, value);
        } else if (key == "fsdp_cpu_ram_efficient_loading") {
          fsdp.cpu_ram_efficient_loading = section.flag(key, value);
        } else if (key == "fsdp_activation_checkpointing") {
          fsdp.activation_checkpointing = section.flag(key, value);
        } else if (key == "fsdp_version") {
          section.integer(key, value, 1, 2);
        }
      });
}

}  // namespace detail

inline Config Config::from_yaml(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(source + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + detail::printable(e.msg));
  }
  Config config;
  config.source = source;
  if (!root || root.IsNull()) return config;
  const detail::YamlSection top(root, source, "");
  // Keys Accelerate writes for features accelerate-cpp has no use for: accepted and ignored,
  // unless they ask for something it cannot do.
  const std::vector<std::string> ignored{"tpu_env",        "tpu_use_cluster",   "tpu_use_sudo",  "tpu_name",
                                         "tpu_zone",       "commands",          "command_file",  "dynamo_config",
                                         "dynamo_backend", "ipex_config",       "mpirun_config", "enable_cpu_affinity",
                                         "fp8_config",     "parallelism_config"};
  std::vector<std::string> known{"compute_environment",
                                 "distributed_type",
                                 "mixed_precision",
                                 "fp16",
                                 "use_cpu",
                                 "num_processes",
                                 "num_machines",
                                 "machine_rank",
                                 "main_process_ip",
                                 "main_process_port",
                                 "gpu_ids",
                                 "rdzv_backend",
                                 "same_network",
                                 "main_training_function",
                                 "downcast_bf16",
                                 "debug",
                                 "gradient_accumulation_steps",
                                 "fsdp_config",
                                 "deepspeed_config",
                                 "megatron_lm_config",
                                 "acc"};
  known.insert(known.end(), ignored.begin(), ignored.end());
  top.each(known, [&](const std::string& key, const YAML::Node& value) {
    if (key == "compute_environment") {
      config.compute_environment = top.choice(key, value, {"LOCAL_MACHINE"});
    } else if (key == "distributed_type") {
      const auto v = top.text(key, value);
      if (std::find(detail::kDistributedTypes.begin(), detail::kDistributedTypes.end(), v) ==
          detail::kDistributedTypes.end())
        top.fail(value, "distributed_type '" + v + "' is not supported by accelerate-cpp; allowed values: " +
                            detail::join(detail::kDistributedTypes));
      config.distributed_type = v;
    } else if (key == "mixed_precision") {
      config.mixed_precision = top.choice(key, value, detail::kMixedPrecisions);
    } else if (key == "fp16") {  // the spelling of Accelerate before mixed_precision
      if (top.flag(key, value)) config.mixed_precision = "fp16";
    } else if (key == "use_cpu") {
      config.use_cpu = top.flag(key, value);
    } else if (key == "num_processes") {
      config.num_processes = static_cast<int>(top.integer(key, value, 1, 1 << 20));
    } else if (key == "num_machines") {
      config.num_machines = static_cast<int>(top.integer(key, value, 1, 1 << 16));
    } else if (key == "machine_rank") {
      config.machine_rank = static_cast<int>(top.integer(key, value, 0, 1 << 16));
    } else if (key == "main_process_ip") {
      if (!value.IsNull()) config.main_process_ip = top.text(key, value);
    } else if (key == "main_process_port") {
      if (!value.IsNull()) config.main_process_port = static_cast<int>(top.integer(key, value, 0, 65535));
    } else if (key == "gpu_ids") {
      config.gpu_ids = top.text(key, value);
    } else if (key == "rdzv_backend") {
      config.rdzv_backend = top.choice(key, value, {"static", "c10d"});
    } else if (key == "same_network") {
      config.same_network = top.flag(key, value);
    } else if (key == "main_training_function") {
      config.main_training_function = top.text(key, value);
    } else if (key == "downcast_bf16") {
      config.downcast_bf16 = top.choice(key, value, {"no", "yes", "fp16", "bf16"});
    } else if (key == "debug") {
      config.debug = top.flag(key, value);
    } else if (key == "gradient_accumulation_steps") {
      config.gradient_accumulation_steps = static_cast<int>(top.integer(key, value, 1, 1 << 20));
    } else if (key == "fsdp_config") {
      if (!value.IsNull())  // a scalar is an error there, not ignored
        detail::read_fsdp(detail::YamlSection(value, source, "fsdp_config."), config.fsdp);
    } else if (key == "deepspeed_config" || key == "megatron_lm_config") {
      if (!value.IsNull() && value.size() > 0)
        top.fail(value, "'" + key + "' is not supported by accelerate-cpp; remove it (use FSDP or MULTI_GPU)");
    } else if (key == "acc") {
      const detail::YamlSection ours(value, source, "acc.");
      ours.each({"bucket_cap_mb", "first_bucket_cap_mb", "find_unused_parameters", "sampler", "even_batches",
                 "split_batches", "log_with", "collective_timeout"},
                [&](const std::string& k, const YAML::Node& v) {
                  if (k == "bucket_cap_mb") config.bucket_cap_mb = ours.number(k, v, 0);
                  if (k == "first_bucket_cap_mb") config.first_bucket_cap_mb = ours.number(k, v, 0);
                  if (k == "find_unused_parameters") config.find_unused_parameters = ours.flag(k, v);
                  if (k == "sampler") config.sampler = ours.choice(k, v, {"sequential", "shuffled"});
                  if (k == "even_batches") config.even_batches = ours.flag(k, v);
                  if (k == "split_batches") config.split_batches = ours.flag(k, v);
                  if (k == "log_with") config.log_with = detail::read_log_with(ours, k, v);
                  if (k == "collective_timeout")
                    config.collective_timeout = static_cast<int>(ours.integer(k, v, 1, 1 << 24));
                });
    }
  });
  if (config.machine_rank >= config.num_machines)
    top.fail(root["machine_rank"], "machine_rank " + std::to_string(config.machine_rank) +
                                       " is not below num_machines " + std::to_string(config.num_machines) +
                                       "; machines are numbered 0 to num_machines - 1");
  if (config.num_processes % config.num_machines != 0)
    top.fail(root["num_processes"], "num_processes " + std::to_string(config.num_processes) +
                                        " is not a multiple of num_machines " + std::to_string(config.num_machines) +
                                        "; num_processes counts the processes of all machines");
  return config;
}

inline Config Config::from_yaml_file(const std::filesystem::path& path) {
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
                                             : "not a regular file") +
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

inline Config Config::with_environment(
    const std::function<std::optional<std::string>(std::string_view)>& lookup) const {
  // Each variable is read as the YAML entry it stands for, so that the same checks apply; a bad
  // value is reported under the variable's name.
  // `section` is "" for top-level keys, else the mapping they belong to ("fsdp_config", "acc").
  const auto entries = [&](const std::vector<std::pair<std::string_view, std::string>>& variables,
                           const std::string& section) {
    const auto in_section = [&](const std::string& yaml) {
      return section.empty() ? yaml : section + ": {" + yaml + "}\n";
    };
    std::string yaml;
    for (const auto& [variable, key] : variables) {
      const auto value = lookup(variable);
      if (!value) continue;
      const std::string entry = key + ": " + detail::yaml_quoted(*value);
      try {
        from_yaml(in_section(entry), "environment");
      } catch (const Error& e) {
        const std::string message = e.what();
        throw Error(std::string(variable) + "='" + *value + "': " + message.substr(message.find(": ") + 2));
      }
      yaml += (yaml.empty() || section.empty() ? "" : ", ") + entry + (section.empty() ? "\n" : "");
    }
    return yaml.empty() ? yaml : in_section(yaml);
  };
  const std::string top = entries({{"ACCELERATE_MIXED_PRECISION", "mixed_precision"},
                                   {"ACCELERATE_USE_CPU", "use_cpu"},
                                   {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "gradient_accumulation_steps"},
                                   {"ACCELERATE_DEBUG_MODE", "debug"},
                                   {"ACC_DISTRIBUTED_TYPE", "distributed_type"}},
                                  "");
  const std::string ours =
      entries({{"ACC_COLLECTIVE_TIMEOUT", "collective_timeout"}, {"ACC_LOG_WITH", "log_with"}}, "acc");
  const std::string fsdp = entries({{"FSDP_SHARDING_STRATEGY", "fsdp_sharding_strategy"},
                                    {"FSDP_AUTO_WRAP_POLICY", "fsdp_auto_wrap_policy"},
                                    {"FSDP_TRANSFORMER_CLS_TO_WRAP", "fsdp_transformer_layer_cls_to_wrap"},
                                    {"FSDP_MIN_NUM_PARAMS", "fsdp_min_num_params"},
                                    {"FSDP_BACKWARD_PREFETCH", "fsdp_backward_prefetch"},
                                    {"FSDP_FORWARD_PREFETCH", "fsdp_forward_prefetch"},
                                    {"FSDP_STATE_DICT_TYPE", "fsdp_state_dict_type"},
                                    {"FSDP_OFFLOAD_PARAMS", "fsdp_offload_params"},
                                    {"FSDP_SYNC_MODULE_STATES", "fsdp_sync_module_states"},
                                    {"FSDP_USE_ORIG_PARAMS", "fsdp_use_orig_params"},
                                    {"FSDP_CPU_RAM_EFFICIENT_LOADING", "fsdp_cpu_ram_efficient_loading"},
                                    {"FSDP_ACTIVATION_CHECKPOINTING", "fsdp_activation_checkpointing"}},
                                   "fsdp_config");
  const Config overrides = from_yaml(top + fsdp + ours, "environment");
  // Only the variables that are set override the file's entries.
  Config config = *this;
  const auto set = [&](std::string_view variable, auto member) {
    if (lookup(variable)) config.*member = overrides.*member;
  };
  set("ACCELERATE_MIXED_PRECISION", &Config::mixed_precision);
  set("ACCELERATE_USE_CPU", &Config::use_cpu);
  set("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", &Config::gradient_accumulation_steps);
  set("ACCELERATE_DEBUG_MODE", &Config::debug);
  set("ACC_DISTRIBUTED_TYPE", &Config::distributed_type);
  set("ACC_COLLECTIVE_TIMEOUT", &Config::collective_timeout);
  set("ACC_LOG_WITH", &Config::log_with);
  const auto set_fsdp = [&](std::string_view variable, auto member) {
    if (lookup(variable)) config.fsdp.*member = overrides.fsdp.*member;
  };
  set_fsdp("FSDP_SHARDING_STRATEGY", &FsdpConfig::sharding_strategy);
  set_fsdp("FSDP_AUTO_WRAP_POLICY", &FsdpConfig::auto_wrap_policy);
  set_fsdp("FSDP_TRANSFORMER_CLS_TO_WRAP", &FsdpConfig::transformer_layer_cls_to_wrap);
  set_fsdp("FSDP_MIN_NUM_PARAMS", &FsdpConfig::min_num_params);
  set_fsdp("FSDP_BACKWARD_PREFETCH", &FsdpConfig::backward_prefetch);
  set_fsdp("FSDP_FORWARD_PREFETCH", &FsdpConfig::forward_prefetch);
  set_fsdp("FSDP_STATE_DICT_TYPE", &FsdpConfig::state_dict_type);
  set_fsdp("FSDP_OFFLOAD_PARAMS", &FsdpConfig::offload_params);
  set_fsdp("FSDP_SYNC_MODULE_STATES", &FsdpConfig::sync_module_states);
  set_fsdp("FSDP_USE_ORIG_PARAMS", &FsdpConfig::use_orig_params);
  set_fsdp("FSDP_CPU_RAM_EFFICIENT_LOADING", &FsdpConfig::cpu_ram_efficient_loading);
  set_fsdp("FSDP_ACTIVATION_CHECKPOINTING", &FsdpConfig::activation_checkpointing);
  if (auto use_fsdp = lookup("ACCELERATE_USE_FSDP")) {
    const auto on = detail::parse_bool(*use_fsdp);
    if (!on) throw Error("ACCELERATE_USE_FSDP='" + *use_fsdp + "' is not a boolean; use true or false");
    if (*on) config.distributed_type = "FSDP";
  }
  // Several processes started without a config (torchrun, a bare `acc launch`): what they run on
  // decides the strategy. The launcher's variables are read (and a bad one named) first.
  if (ProcessEnvironment::from(lookup).is_distributed() && config.distributed_type == "NO")
    config.distributed_type = config.use_cpu ? "MULTI_CPU" : "MULTI_GPU";
  return config;
}

inline Config Config::from_environment() {
  const auto lookup = [](std::string_view name) -> std::optional<std::string> {
    if (const char* value = std::getenv(std::string(name).c_str())) return std::string(value);
    return std::nullopt;
  };
  Config base;
  if (auto file = lookup("ACC_CONFIG_FILE"))
    base = from_yaml_file(*file);
  else if (std::filesystem::exists(default_config_file()))
    base = from_yaml_file(default_config_file());
  return base.with_environment(lookup);
}

}  // namespace acc
