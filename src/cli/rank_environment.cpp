#include "rank_environment.hpp"

#include <algorithm>
#include <map>
#include <string_view>

namespace acc::cli {

std::vector<std::string> rank_environment(const LaunchOptions& options, const Machine& machine, int port, int restart,
                                          int local_rank, char** environment) {
  const int local_world_size = options.processes_per_machine();
  std::map<std::string, std::string> job = {
      {"RANK", std::to_string(options.machine_rank * local_world_size + local_rank)},
      {"WORLD_SIZE", std::to_string(options.num_processes)},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(local_world_size)},
      {"GROUP_RANK", std::to_string(options.machine_rank)},
      {"GROUP_WORLD_SIZE", std::to_string(options.num_machines)},
      {"MASTER_ADDR", options.main_process_ip},
      {"MASTER_PORT", std::to_string(port)},
      {"ACC_RDZV_TIMEOUT", std::to_string(options.rdzv_timeout_seconds)},
      {"ACC_DISTRIBUTED_TYPE", options.distributed_type},
      // torchrun's names, so that a program written for it knows that it should resume.
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(restart)},
      {"TORCHELASTIC_MAX_RESTARTS", std::to_string(options.max_restarts)},
  };
  if (options.config_file) job["ACC_CONFIG_FILE"] = *options.config_file;
  if (options.cpu) job["ACCELERATE_USE_CPU"] = "true";
  if (options.mixed_precision) job["ACCELERATE_MIXED_PRECISION"] = *options.mixed_precision;
  if (options.gpu_ids && *options.gpu_ids != "all") job["CUDA_VISIBLE_DEVICES"] = *options.gpu_ids;
  // The flags win over the config file, which the ranks read before the environment.
  if (options.gradient_accumulation_steps)
    job["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] = std::to_string(*options.gradient_accumulation_steps);
  if (options.debug) job["ACCELERATE_DEBUG_MODE"] = "true";
  if (options.dp_replicate_size)
    job["PARALLELISM_CONFIG_DP_REPLICATE_SIZE"] = std::to_string(*options.dp_replicate_size);
  if (options.dp_shard_size) job["PARALLELISM_CONFIG_DP_SHARD_SIZE"] = std::to_string(*options.dp_shard_size);
  if (options.tp_size) job["PARALLELISM_CONFIG_TP_SIZE"] = std::to_string(*options.tp_size);
  // --num_cpu_threads_per_process, else as torchrun does: ranks sharing this machine's CPUs each
  // take their share of the threads, rather than every rank starting one thread per CPU; a value
  // the user set is kept, and a single rank is left to libtorch's default (every CPU).
  const auto is_set = [&](std::string_view name) {
    for (char** entry = environment; *entry; ++entry)
      if (std::string_view(*entry).substr(0, name.size() + 1) == std::string(name) + "=") return true;
    return false;
  };
  if (options.num_cpu_threads_per_process)
    job["OMP_NUM_THREADS"] = std::to_string(*options.num_cpu_threads_per_process);
  else if (local_world_size > 1 && !is_set("OMP_NUM_THREADS"))
    job["OMP_NUM_THREADS"] = std::to_string(std::max(1, machine.cpus / local_world_size));

  std::vector<std::string> entries;
  for (char** entry = environment; *entry; ++entry) {
    const std::string_view text(*entry);
    if (!job.count(std::string(text.substr(0, text.find('='))))) entries.emplace_back(text);
  }
  for (const auto& [name, value] : job) entries.push_back(name + "=" + value);
  return entries;
}

std::vector<char*> null_terminated(const std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (const std::string& text : strings) pointers.push_back(const_cast<char*>(text.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

}  // namespace acc::cli
