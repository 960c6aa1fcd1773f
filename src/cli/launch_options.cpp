#include "launch_options.hpp"

#include <acc/config/config.hpp>

#include <dirent.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string_view>
#include <thread>

namespace acc::cli {
namespace {

// A longer run of digits is not a sensible count, rank or timeout, and could overflow int.
constexpr std::size_t kMaxDigits = 9;
constexpr double kMaxSeconds = 24 * 60 * 60;
// Each rank is a process with its own thread pool and communicator: beyond a few per CPU a job
// mostly waits for the scheduler, and a slip (1000 for 10) would start a thousand of them.
constexpr int kMaxRanksPerCpu = 4;
// What --num_cpu_threads_per_process accepts: far beyond any machine's CPUs, but not a slip of
// digits that would ask the OpenMP runtime for a billion threads.
constexpr int kMaxThreads = 1 << 16;

// What the flags said, including what LaunchOptions cannot tell from its defaults.
struct ParseState {
  LaunchOptions options;
  bool num_processes_given = false;
  bool main_process_ip_given = false;
  bool cpu_given = false;
  bool multi_gpu_given = false;
  bool gpu_ids_given = false;  // by the flag, not the config file
  bool fsdp_in_config = false;
};

using ApplyFlag = std::function<std::optional<std::string>(ParseState&, const std::string& value)>;

struct Flag {
  std::string_view name;
  std::string_view allowed;  // what a value may be; empty for switches
  ApplyFlag apply;
};

std::string not_valid(std::string_view flag, const std::string& value, std::string_view allowed) {
  return std::string(flag) + " '" + value + "' is not valid; use " + std::string(allowed);
}

// Strict: digits only, so "+3", " 3" and "3x" are rejected rather than read as 3.
std::optional<int> parse_non_negative_int(const std::string& text) {
  if (text.empty() || text.size() > kMaxDigits) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

std::optional<double> parse_seconds(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0' || !std::isfinite(value) || value < 0 || value > kMaxSeconds) return std::nullopt;
  return value;
}

// "all", or distinct GPU indices separated by commas; returns how many GPUs that names.
std::optional<int> count_gpu_ids(const std::string& text, int gpus_on_this_machine) {
  if (text == "all") return gpus_on_this_machine;
  std::vector<int> ids;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const auto id = parse_non_negative_int(text.substr(start, comma - start));
    if (!id) return std::nullopt;
    for (int seen : ids)
      if (seen == *id) return std::nullopt;
    ids.push_back(*id);
    if (comma == std::string::npos) return static_cast<int>(ids.size());
    start = comma + 1;
  }
}

// A flag with a value: `accept` stores it, or returns false when it is not one of the allowed ones.
Flag value_flag(std::string_view name, std::string_view allowed,
                std::function<bool(ParseState&, const std::string&)> accept) {
  return {name, allowed, [=](ParseState& state, const std::string& value) -> std::optional<std::string> {
            if (accept(state, value)) return std::nullopt;
            return not_valid(name, value, allowed);
          }};
}

Flag int_flag(std::string_view name, std::string_view allowed, int minimum, int LaunchOptions::*field,
              bool ParseState::*given = nullptr) {
  return value_flag(name, allowed, [=](ParseState& state, const std::string& value) {
    const auto number = parse_non_negative_int(value);
    if (!number || *number < minimum) return false;
    state.options.*field = *number;
    if (given) state.*given = true;
    return true;
  });
}

// An integer flag whose absence means something else than any value (the field stays nullopt).
Flag optional_int_flag(std::string_view name, std::string_view allowed, int minimum, int maximum,
                       std::optional<int> LaunchOptions::*field) {
  return value_flag(name, allowed, [=](ParseState& state, const std::string& value) {
    const auto number = parse_non_negative_int(value);
    if (!number || *number < minimum || *number > maximum) return false;
    state.options.*field = *number;
    return true;
  });
}

Flag seconds_flag(std::string_view name, double LaunchOptions::*field) {
  return value_flag(name, "a number of seconds from 0 to 86400", [=](ParseState& state, const std::string& value) {
    const auto seconds = parse_seconds(value);
    if (seconds) state.options.*field = *seconds;
    return seconds.has_value();
  });
}

Flag switch_flag(std::string_view name, bool LaunchOptions::*field, bool ParseState::*given = nullptr) {
  return {name, "", [=](ParseState& state, const std::string&) -> std::optional<std::string> {
            state.options.*field = true;
            if (given) state.*given = true;
            return std::nullopt;
          }};
}

// The settings of a YAML config with the environment's overrides (as the ranks will read them),
// as if they were flags given before the command line's.
void apply_config(ParseState& state, const acc::Config& config, const std::string& path) {
  LaunchOptions& options = state.options;
  options.config_file = path;
  options.num_processes = config.num_processes;
  state.num_processes_given = true;
  options.num_machines = config.num_machines;
  options.machine_rank = config.machine_rank;
  if (config.main_process_ip) {
    options.main_process_ip = *config.main_process_ip;
    state.main_process_ip_given = true;
  }
  if (config.main_process_port) options.main_process_port = *config.main_process_port;
  options.cpu = config.use_cpu || config.distributed_type == "MULTI_CPU";
  options.multi_gpu = !options.cpu && (config.distributed_type == "MULTI_GPU" || config.distributed_type == "FSDP");
  if (!options.cpu && config.gpu_ids && *config.gpu_ids != "all") options.gpu_ids = config.gpu_ids;
  options.mixed_precision = config.mixed_precision;
  state.fsdp_in_config = config.distributed_type == "FSDP";
}

// The config file: --config_file's, else as config_file_in_use picks it.
std::optional<std::string> find_config_file(const std::vector<std::string>& arguments) {
  std::optional<std::string> flag;
  for (std::size_t i = 0; i < arguments.size() && !flag; ++i) {
    const std::string& argument = arguments[i];
    if (argument == "--" || argument.size() < 2 || argument[0] != '-') break;
    if (argument.rfind("--config_file=", 0) == 0) flag = argument.substr(std::string("--config_file=").size());
    if (argument == "--config_file" && i + 1 < arguments.size()) flag = arguments[i + 1];
  }
  const ConfigFileInUse in_use = config_file_in_use(flag);
  if (in_use.named || std::filesystem::exists(in_use.path)) return in_use.path.string();
  return std::nullopt;
}

const std::vector<Flag>& launch_flags() {
  static const std::vector<Flag> flags = {
      int_flag("--num_processes", "a positive integer", 1, &LaunchOptions::num_processes,
               &ParseState::num_processes_given),
      int_flag("--num_machines", "a positive integer", 1, &LaunchOptions::num_machines),
      int_flag("--machine_rank", "an integer from 0 to num_machines - 1", 0, &LaunchOptions::machine_rank),
      value_flag("--main_process_ip", "the host name or IP address of machine rank 0",
                 [](ParseState& state, const std::string& value) {
                   state.options.main_process_ip = value;
                   state.main_process_ip_given = true;
                   return !value.empty();
                 }),
      value_flag("--main_process_port", "a TCP port from 1 to 65535, or 0 to pick a free one",
                 [](ParseState& state, const std::string& value) {
                   const auto port = parse_non_negative_int(value);
                   if (!port || *port > 65535) return false;
                   state.options.main_process_port = *port;
                   return true;
                 }),
      switch_flag("--cpu", &LaunchOptions::cpu, &ParseState::cpu_given),
      switch_flag("--multi_gpu", &LaunchOptions::multi_gpu, &ParseState::multi_gpu_given),
      value_flag("--gpu_ids", "comma-separated distinct GPU indices such as 0,1, or all",
                 [](ParseState& state, const std::string& value) {
                   state.options.gpu_ids = value;
                   state.gpu_ids_given = true;
                   return count_gpu_ids(value, 0).has_value();
                 }),
      value_flag("--mixed_precision", "one of: no, fp16, bf16, fp8",
                 [](ParseState& state, const std::string& value) {
                   state.options.mixed_precision = value;
                   return value == "no" || value == "fp16" || value == "bf16" || value == "fp8";
                 }),
      // Read before the other flags (see find_config_file), so that they win over the file.
      value_flag("--config_file", "the path of a YAML config (as `acc config` writes)",
                 [](ParseState&, const std::string& value) { return !value.empty(); }),
      switch_flag("--tee", &LaunchOptions::tee),
      value_flag("--log_dir", "a directory to write the ranks' output to",
                 [](ParseState& state, const std::string& value) {
                   state.options.log_dir = value;
                   return !value.empty();
                 }),
      optional_int_flag("--gradient_accumulation_steps", "a positive integer up to 1048576", 1, 1 << 20,
                        &LaunchOptions::gradient_accumulation_steps),
      switch_flag("--debug", &LaunchOptions::debug),
      optional_int_flag("--parallelism_config_dp_replicate_size", "a positive integer up to 1048576", 1, 1 << 20,
                        &LaunchOptions::dp_replicate_size),
      optional_int_flag("--parallelism_config_dp_shard_size", "a positive integer up to 1048576", 1, 1 << 20,
                        &LaunchOptions::dp_shard_size),
      optional_int_flag("--parallelism_config_tp_size", "a positive integer up to 1048576", 1, 1 << 20,
                        &LaunchOptions::tp_size),
      optional_int_flag("--parallelism_config_cp_size", "1 (context parallelism is not built yet)", 1, 1,
                        &LaunchOptions::cp_size),
      optional_int_flag("--num_cpu_threads_per_process", "a positive integer", 1, kMaxThreads,
                        &LaunchOptions::num_cpu_threads_per_process),
      switch_flag("--oversubscribe", &LaunchOptions::oversubscribe),
      seconds_flag("--grace_period", &LaunchOptions::grace_period_seconds),
      int_flag("--rdzv_timeout", "a positive whole number of seconds", 1, &LaunchOptions::rdzv_timeout_seconds),
      int_flag("--max_restarts", "a whole number from 0 (no restart)", 0, &LaunchOptions::max_restarts),
      seconds_flag("--restart_delay", &LaunchOptions::restart_delay_seconds),
      seconds_flag("--max_restart_delay", &LaunchOptions::max_restart_delay_seconds),
      // torchrun's and Python Accelerate's polling interval: accepted so that their command lines
      // work unchanged, but there is nothing to poll. The supervision loop sleeps in poll() on the
      // signalfd (SIGCHLD, the forwarded signals) and the ranks' output pipes, so a rank's exit wakes it at
      // once; its only timed wake-ups are the deadlines of stopping (--grace_period, SIGKILL).
      value_flag("--monitor_interval", "a number of seconds from 0 to 86400",
                 [](ParseState&, const std::string& value) { return parse_seconds(value).has_value(); }),
  };
  return flags;
}

std::string valid_flag_names() {
  std::string names = "-h/--help";
  for (const Flag& flag : launch_flags()) names += ", " + std::string(flag.name);
  return names;
}

// The checks that involve several flags, and the defaults that depend on others.
std::optional<std::string> finish(ParseState& state, const Machine& machine) {
  LaunchOptions& options = state.options;
  if (state.cpu_given && state.multi_gpu_given) return "--cpu and --multi_gpu cannot be used together; pick one";
  // A flag overrides the machine type the config file chose.
  if (state.cpu_given) options.multi_gpu = false;
  if (state.multi_gpu_given) options.cpu = false;
  if (options.cpu && options.gpu_ids) return "--gpu_ids '" + *options.gpu_ids + "' cannot be used with --cpu";
  if (options.gpu_ids && machine.gpus == 0)
    return (state.gpu_ids_given ? "--gpu_ids '" + *options.gpu_ids + "'"
                                : "gpu_ids '" + *options.gpu_ids + "' in " + *options.config_file) +
           " names GPUs, but no CUDA device is present (no NVIDIA GPU in /proc/driver/nvidia/gpus); leave it out, or "
           "pass --cpu to train on the CPU";
  if (options.machine_rank >= options.num_machines)
    return not_valid("--machine_rank", std::to_string(options.machine_rank),
                     "an integer from 0 to " + std::to_string(options.num_machines - 1) + " (--num_machines " +
                         std::to_string(options.num_machines) + ")");
  if (options.machine_rank > 0 && !state.main_process_ip_given)
    return "--main_process_ip is required on machine rank " + std::to_string(options.machine_rank) +
           "; pass the address of machine rank 0";
  if (options.machine_rank > 0 && options.main_process_port == 0)
    return "--main_process_port 0 (pick a free port) works only on machine rank 0; pass the port that machine rank 0 "
           "printed";
  if (!state.num_processes_given) {
    // Like --num_processes, the default counts every machine: each one runs as many as it has GPUs.
    int per_machine = 1;
    if (options.multi_gpu) {
      per_machine = options.gpu_ids ? *count_gpu_ids(*options.gpu_ids, machine.gpus) : machine.gpus;
      if (per_machine == 0)
        return "--multi_gpu found no NVIDIA GPU in /proc/driver/nvidia/gpus; pass --num_processes N if the GPUs are "
               "there, or --cpu to train on the CPU";
    }
    options.num_processes = per_machine * options.num_machines;
  }
  if (options.num_processes % options.num_machines != 0)
    return "--num_processes " + std::to_string(options.num_processes) + " is not divisible by --num_machines " +
           std::to_string(options.num_machines) + "; each machine runs num_processes / num_machines processes";
  // The mesh's sizes, where the flags give them (the ranks check those of the config file).
  const int processes = options.num_processes, tp = options.tp_size.value_or(1);
  if (processes % tp != 0)
    return "--parallelism_config_tp_size " + std::to_string(tp) + " does not divide --num_processes " +
           std::to_string(processes) + "; each tensor-parallel group is tp_size processes";
  if (options.dp_replicate_size && options.dp_shard_size &&
      *options.dp_replicate_size * *options.dp_shard_size * tp != processes)
    return "--parallelism_config_dp_replicate_size " + std::to_string(*options.dp_replicate_size) +
           " x --parallelism_config_dp_shard_size " + std::to_string(*options.dp_shard_size) + " x tp_size " +
           std::to_string(tp) + " is not --num_processes " + std::to_string(processes) +
           "; make their product the number of processes";
  if (options.processes_per_machine() > kMaxRanksPerCpu * machine.cpus && !options.oversubscribe)
    return "--num_processes " + std::to_string(options.num_processes) + " would start " +
           std::to_string(options.processes_per_machine()) + " processes on this machine, more than " +
           std::to_string(kMaxRanksPerCpu) + " per CPU (" + std::to_string(machine.cpus) +
           " CPU(s) usable); pass a smaller --num_processes, or --oversubscribe to start them anyway";
  if (state.fsdp_in_config && !options.cpu)
    options.distributed_type = "FSDP";
  else if (options.num_processes > 1)
    options.distributed_type = options.cpu ? "MULTI_CPU" : "MULTI_GPU";
  return std::nullopt;
}

}  // namespace

LaunchParse parse_launch_arguments(const std::vector<std::string>& arguments, const Machine& machine) {
  ParseState state;
  if (const auto path = find_config_file(arguments)) {
    try {
      apply_config(state, acc::Config::from_yaml_file(*path).with_overrides(acc::process_variable),
                   std::filesystem::absolute(*path).string());
    } catch (const acc::Error& e) {
      return UsageError{e.what()};
    }
  }
  std::size_t index = 0;
  for (; index < arguments.size(); ++index) {
    const std::string& argument = arguments[index];
    if (argument == "--") {
      ++index;
      break;
    }
    if (argument == "-h" || argument == "--help") return HelpRequested{};
    if (argument.size() < 2 || argument[0] != '-') break;  // the program

    const std::size_t equals = argument.find('=');
    const std::string name = argument.substr(0, equals);
    const Flag* flag = nullptr;
    for (const Flag& candidate : launch_flags())
      if (candidate.name == name) flag = &candidate;
    if (!flag) return UsageError{"unknown flag " + name + "; valid flags: " + valid_flag_names()};

    std::string value;
    if (flag->allowed.empty()) {
      if (equals != std::string::npos) return UsageError{name + " takes no value"};
    } else if (equals != std::string::npos) {
      value = argument.substr(equals + 1);
    } else if (index + 1 < arguments.size() && arguments[index + 1].rfind("--", 0) != 0) {
      value = arguments[++index];
    } else {
      return UsageError{name + " needs a value: " + std::string(flag->allowed)};
    }
    if (auto error = flag->apply(state, value)) return UsageError{*error};
  }

  state.options.program_and_arguments.assign(arguments.begin() + static_cast<std::ptrdiff_t>(index), arguments.end());
  if (state.options.program_and_arguments.empty())
    return UsageError{"no program given; usage: acc launch [flags] PROGRAM [ARGS...]"};
  if (auto error = finish(state, machine)) return UsageError{*error};
  return state.options;
}

ConfigFileInUse config_file_in_use(const std::optional<std::string>& config_file_flag) {
  if (config_file_flag) return {*config_file_flag, true};
  if (const char* variable = std::getenv("ACC_CONFIG_FILE"); variable && *variable) return {variable, true};
  return {acc::default_config_file(), false};
}

int count_nvidia_gpus() {
  const std::unique_ptr<DIR, int (*)(DIR*)> directory(opendir("/proc/driver/nvidia/gpus"), closedir);
  if (!directory) return 0;
  int count = 0;
  while (const dirent* entry = readdir(directory.get()))
    if (entry->d_name[0] != '.') ++count;  // one folder per GPU, named by its PCI address
  return count;
}

Machine this_machine() {
  Machine machine;
  machine.gpus = count_nvidia_gpus();
  cpu_set_t cpus;
  machine.cpus = sched_getaffinity(0, sizeof cpus, &cpus) == 0
                     ? CPU_COUNT(&cpus)
                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return machine;
}

const char* launch_usage() {
  return R"(usage: acc launch [flags] PROGRAM [ARGS...]

Starts PROGRAM once per rank of this machine, with the variables torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), and supervises
them: when one rank fails, the others are stopped and acc launch exits with the failing rank's code
(or, with --max_restarts, starts them all again).

flags (--flag value and --flag=value both work):
  --num_processes N        processes across all machines (default: 1 per machine; with --multi_gpu,
                           one per GPU, counted from --gpu_ids or the driver)
  --num_machines M         machines in the job (default 1); N must be a multiple of M
  --machine_rank R         this machine's index, 0..M-1 (default 0)
  --main_process_ip IP     address of machine rank 0 (default 127.0.0.1; required when R > 0)
  --main_process_port P    rendezvous port on machine rank 0 (default 29500; 0 picks a free one)
  --cpu                    train on the CPU even when GPUs are there (ACCELERATE_USE_CPU=true)
  --multi_gpu              one process per GPU
  --gpu_ids IDS            GPUs to use, such as 0,1 (sets CUDA_VISIBLE_DEVICES), or all
  --mixed_precision P      no, fp16, bf16 or fp8 (ACCELERATE_MIXED_PRECISION)
  --config_file PATH       a YAML config as `acc config` (or Python's `accelerate config`) writes;
                           default: $HF_HOME/accelerate/default_config.yaml if it exists. Flags
                           win over it; the ranks read the rest of it (ACC_CONFIG_FILE)
  --tee                    prefix each line the ranks print with [rank N]; when a reader of acc
                           launch's output falls more than 4 MiB behind, lines are dropped (and
                           counted) rather than holding up the job
  --log_dir DIR            also write each local rank's stdout and stderr, as it printed them, to
                           DIR/rank_<RANK>.stdout and DIR/rank_<RANK>.stderr (DIR is created; the
                           files are emptied when acc launch starts, and each --max_restarts restart
                           appends a line "acc launch: restart K of N begins" to them). The terminal
                           still gets the output, passed on by acc launch as with --tee (prefixed
                           only with --tee; the 4 MiB rule applies to it, never to the files), so
                           the ranks' stdout and stderr are pipes, not the terminal
  --gradient_accumulation_steps N
                           micro-batches per optimizer step, 1 to 1048576
                           (ACCELERATE_GRADIENT_ACCUMULATION_STEPS; wins over the config's)
  --debug                  collective debug mode: the ranks compare every collective before running
                           it, so a mismatch is an error, not a hang (ACCELERATE_DEBUG_MODE=true)
  --parallelism_config_dp_replicate_size R
  --parallelism_config_dp_shard_size S
  --parallelism_config_tp_size T
                           the device mesh's sizes (PARALLELISM_CONFIG_DP_REPLICATE_SIZE, ...; win
                           over the config's): T must divide the processes, and R x S x T, when R
                           and S are both given, must be them (docs/tensor_parallelism.md)
  --parallelism_config_cp_size C
                           context parallelism: not built yet, so only 1
  --num_cpu_threads_per_process N
                           CPU threads of each rank (OMP_NUM_THREADS=N). Default: an OMP_NUM_THREADS
                           set in acc launch's environment is kept; else with more than one local
                           process, the usable CPUs divided by the local processes (at least 1); with
                           one, OMP_NUM_THREADS stays unset (libtorch then uses every CPU)
  --oversubscribe          start more than 4 processes per usable CPU on this machine (refused
                           without it, as a likely slip)
  --grace_period S         seconds the ranks get to exit after SIGTERM before SIGKILL (default 5)
  --rdzv_timeout S         seconds the ranks wait for each other at start-up (default 300;
                           ACC_RDZV_TIMEOUT)
  --max_restarts K         when a rank fails, stop the local ranks and start them all again, up
                           to K times (default 0), with a new rendezvous; they read which restart
                           this is from TORCHELASTIC_RESTART_COUNT (0 on the first start) and
                           should resume from their latest checkpoint. With --main_process_port 0
                           each start gets a fresh port
  --restart_delay S        seconds to wait before the first restart (default 1); the wait doubles
                           before each next restart, up to --max_restart_delay
  --max_restart_delay S    the longest wait before a restart (default 30)
  --monitor_interval S     accepted for torchrun and Python Accelerate command lines; no effect:
                           acc launch does not poll its ranks. A rank's exit (SIGCHLD) or a signal
                           wakes it at once, so there is no interval to choose
  -h, --help               show this help
  --                       ends the flags, for a PROGRAM whose name starts with -
)";
}

}  // namespace acc::cli
