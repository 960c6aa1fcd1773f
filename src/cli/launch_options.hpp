// The flags of `acc launch`, parsed and checked before anything is started.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace acc::cli {

struct LaunchOptions {
  int num_processes = 1;  // across all machines, as in Python Accelerate
  int num_machines = 1;
  int machine_rank = 0;
  std::string main_process_ip = "127.0.0.1";
  int main_process_port = 29500;  // 0: pick a free port on this machine
  bool cpu = false;
  bool multi_gpu = false;
  std::optional<std::string> gpu_ids;          // becomes CUDA_VISIBLE_DEVICES; absent or "all": left alone
  std::optional<std::string> mixed_precision;  // no, fp16 or bf16
  // The YAML config the settings came from (--config_file, else the default file if there is
  // one); the ranks read the rest of it (FSDP, accumulation, the acc section) through ACC_CONFIG_FILE.
  std::optional<std::string> config_file;
  std::string distributed_type = "NO";  // what the ranks run: NO, MULTI_CPU, MULTI_GPU or FSDP
  bool tee = false;
  // Also each local rank's stdout and stderr to <log_dir>/rank_<global rank>.stdout and .stderr.
  std::optional<std::string> log_dir;
  std::optional<int> gradient_accumulation_steps;  // ACCELERATE_GRADIENT_ACCUMULATION_STEPS
  // Accelerate 1.x's ParallelismConfig sizes: PARALLELISM_CONFIG_DP_REPLICATE_SIZE, _DP_SHARD_SIZE,
  // _TP_SIZE (context parallelism is not built: its size can only be 1).
  std::optional<int> dp_replicate_size, dp_shard_size, tp_size, cp_size;
  bool debug = false;  // ACCELERATE_DEBUG_MODE=true
  // OMP_NUM_THREADS of every rank; absent: the default that rank_environment() says.
  std::optional<int> num_cpu_threads_per_process;
  bool oversubscribe = false;  // more processes than a few per CPU are wanted, not a slip
  double grace_period_seconds = 5;
  int rdzv_timeout_seconds = 300;
  int max_restarts = 0;  // times the local group is started again after a rank fails
  // The pause before the first restart, doubled before each next one up to the maximum, so that a
  // job that fails at once does not restart thousands of times a minute.
  double restart_delay_seconds = 1;
  double max_restart_delay_seconds = 30;
  std::vector<std::string> program_and_arguments;  // never empty after a successful parse

  int processes_per_machine() const { return num_processes / num_machines; }
};

struct HelpRequested {};
struct UsageError {
  std::string message;  // one line, without the "acc launch: " prefix
};
using LaunchParse = std::variant<LaunchOptions, HelpRequested, UsageError>;

// What this machine has: the defaults and limits of the flags depend on it.
struct Machine {
  int gpus = 0;  // NVIDIA GPUs, as count_nvidia_gpus()
  int cpus = 1;  // CPUs this process may run on
};
Machine this_machine();

// The config file acc launch applies and acc env shows, picked as a launched program's
// Config::from_environment picks it: --config_file's value (`config_file_flag`), else the file
// ACC_CONFIG_FILE names, else the default file (acc::default_config_file()). A named file must
// exist; the default one may be missing, and then none is used.
struct ConfigFileInUse {
  std::filesystem::path path;
  bool named = false;  // by the flag or ACC_CONFIG_FILE
};
ConfigFileInUse config_file_in_use(const std::optional<std::string>& config_file_flag);

// The number of NVIDIA GPUs the driver lists in /proc/driver/nvidia/gpus (0 when there is no driver).
int count_nvidia_gpus();

// Parses the arguments after `acc launch`, on top of the YAML config (--config_file, else the
// default file): flags win over the file. `machine.gpus` gives the default number of processes
// for --multi_gpu when neither --num_processes nor --gpu_ids says it.
LaunchParse parse_launch_arguments(const std::vector<std::string>& arguments, const Machine& machine);

const char* launch_usage();

}  // namespace acc::cli
