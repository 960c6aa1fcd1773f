// The bodies of config/environment.hpp: the launchers' variables read into a ProcessEnvironment.
#pragma once

#include <acc/config/environment.hpp>

namespace acc::detail {

ACC_DECL int parse_env_int(std::string_view name, const std::string& value, int min, int max,
                           std::string_view meaning) {
  std::size_t used = 0;
  long parsed = 0;
  bool ok = !value.empty();
  try {
    parsed = ok ? std::stol(value, &used, 10) : 0;
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok || used != value.size())
    throw Error(std::string(name) + "='" + value + "' is not an integer; set it to " + std::string(meaning));
  if (parsed < min || parsed > max)
    throw Error(std::string(name) + "=" + value + " is out of range [" + std::to_string(min) + ", " +
                std::to_string(max) + "]; set it to " + std::string(meaning));
  return static_cast<int>(parsed);
}

ACC_DECL bool parse_env_bool(std::string_view name, const std::string& value) {
  if (auto parsed = parse_bool(value)) return *parsed;
  throw Error(std::string(name) + "='" + value + "' is not a boolean; use true/false (or 1/0, yes/no)");
}

ACC_DECL int slurm_tasks_on_node(const std::string& spec, int node) {
  int first_node = 0;
  std::size_t pos = 0;
  while (pos < spec.size()) {
    const auto end = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, end - pos);
    const auto paren = item.find("(x");
    const int tasks =
        parse_env_int("SLURM_TASKS_PER_NODE", item.substr(0, paren), 1, 1 << 20, "SLURM's task list, e.g. '4(x2),3'");
    int repeat = 1;
    if (paren != std::string::npos) {
      if (item.back() != ')') throw Error("SLURM_TASKS_PER_NODE='" + spec + "' is malformed; expected e.g. '4(x2),3'");
      repeat = parse_env_int("SLURM_TASKS_PER_NODE", item.substr(paren + 2, item.size() - paren - 3), 1, 1 << 20,
                             "SLURM's task list, e.g. '4(x2),3'");
    }
    if (node < first_node + repeat) return tasks;
    first_node += repeat;
    pos = end + 1;
  }
  throw Error("SLURM_TASKS_PER_NODE='" + spec + "' lists fewer nodes than SLURM_NODEID=" + std::to_string(node) +
              " needs; run under srun/sbatch, which sets both");
}

}  // namespace acc::detail

namespace acc {

ACC_DECL ProcessEnvironment ProcessEnvironment::from(const EnvironmentLookup& lookup) {
  constexpr int kMaxProcesses = 1 << 20;
  ProcessEnvironment env;
  const auto int_var = [&](std::string_view name, int min, int max, std::string_view meaning) -> std::optional<int> {
    if (auto value = lookup(name)) return detail::parse_env_int(name, *value, min, max, meaning);
    return std::nullopt;
  };
  const auto require = [&](std::string_view name, std::string_view because, int min, std::string_view meaning) {
    auto value = int_var(name, min, kMaxProcesses, meaning);
    if (!value)
      throw Error(std::string(name) + " is not set but " + std::string(because) + " is; set " + std::string(name) +
                  " to " + std::string(meaning));
    return *value;
  };

  if (lookup("RANK") || lookup("WORLD_SIZE")) {
    // torchrun, `acc launch`, or a user who exported the variables by hand.
    env.launcher = "torchrun";
    env.world_size = require("WORLD_SIZE", "RANK", 1, "the total number of processes");
    env.rank = require("RANK", "WORLD_SIZE", 0, "this process's rank in 0..WORLD_SIZE-1");
    env.local_rank = int_var("LOCAL_RANK", 0, kMaxProcesses, "this process's rank on its node").value_or(env.rank);
    env.local_world_size =
        int_var("LOCAL_WORLD_SIZE", 1, kMaxProcesses, "the number of processes on this node").value_or(env.world_size);
    if (auto node = int_var("GROUP_RANK", 0, kMaxProcesses, "this node's rank"))
      env.node_rank = *node;
    else
      env.node_rank = env.rank / env.local_world_size;
  } else if (lookup("OMPI_COMM_WORLD_RANK")) {
    env.launcher = "Open MPI";
    env.world_size = require("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", 1, "the number of MPI processes");
    env.rank = require("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", 0, "the MPI rank");
    env.local_rank = require("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_RANK", 0, "the MPI rank on this node");
    env.local_world_size =
        require("OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_RANK", 1, "the number of MPI processes on this node");
    env.node_rank = env.rank / env.local_world_size;
  } else if (lookup("SLURM_PROCID")) {
    env.launcher = "SLURM";
    env.world_size = require("SLURM_NTASKS", "SLURM_PROCID", 1, "the number of tasks (srun -n)");
    env.rank = require("SLURM_PROCID", "SLURM_NTASKS", 0, "the task's rank");
    env.local_rank = require("SLURM_LOCALID", "SLURM_PROCID", 0, "the task's rank on its node");
    env.node_rank = int_var("SLURM_NODEID", 0, kMaxProcesses, "the node's index").value_or(0);
    if (auto per_node = int_var("SLURM_NTASKS_PER_NODE", 1, kMaxProcesses, "tasks per node"))
      env.local_world_size = *per_node;
    else if (auto spec = lookup("SLURM_TASKS_PER_NODE"))
      env.local_world_size = detail::slurm_tasks_on_node(*spec, env.node_rank);
    else
      env.local_world_size = env.world_size;
    if (!lookup("MASTER_ADDR"))
      if (auto launch_node = lookup("SLURM_LAUNCH_NODE_IPADDR")) env.master_addr = *launch_node;
  }

  if (env.rank >= env.world_size)
    throw Error("rank " + std::to_string(env.rank) + " (from " + env.launcher +
                " variables) is not below the world size " + std::to_string(env.world_size) +
                "; ranks run from 0 to world size - 1");
  if (env.local_world_size > env.world_size)
    throw Error("the local world size " + std::to_string(env.local_world_size) + " exceeds the world size " +
                std::to_string(env.world_size) + " (" + env.launcher +
                " variables); fix LOCAL_WORLD_SIZE or WORLD_SIZE");
  if (env.local_rank >= env.local_world_size)
    throw Error("local rank " + std::to_string(env.local_rank) + " is not below the local world size " +
                std::to_string(env.local_world_size) + " (" + env.launcher +
                " variables); fix LOCAL_RANK or LOCAL_WORLD_SIZE");
  env.num_nodes = (env.world_size + env.local_world_size - 1) / env.local_world_size;

  if (auto addr = lookup("MASTER_ADDR")) {
    if (addr->empty()) throw Error("MASTER_ADDR is set but empty; set it to the host name or IP of rank 0's machine");
    env.master_addr = *addr;
  } else if (env.num_nodes > 1 && env.launcher != "SLURM") {
    throw Error("MASTER_ADDR is not set but the job spans " + std::to_string(env.num_nodes) +
                " nodes; export MASTER_ADDR=<address of rank 0's machine> on every node");
  }
  if (auto port = int_var("MASTER_PORT", 1, 65535, "a free TCP port on rank 0's machine")) env.master_port = *port;

  if (auto cpu = lookup("ACCELERATE_USE_CPU")) env.use_cpu = detail::parse_env_bool("ACCELERATE_USE_CPU", *cpu);
  if (auto precision = lookup("ACCELERATE_MIXED_PRECISION")) {
    const auto& allowed = detail::mixed_precision_values();
    if (std::find(allowed.begin(), allowed.end(), *precision) == allowed.end()) {
      std::string values;
      for (const auto& value : allowed) values += (values.empty() ? "" : ", ") + value;
      throw Error("ACCELERATE_MIXED_PRECISION='" + *precision + "' is not supported; use one of: " + values);
    }
    env.mixed_precision = *precision;
  }
  if (auto level = lookup("ACCELERATE_LOG_LEVEL"); level && !level->empty()) env.log_level = *level;
  if (auto seconds = int_var("ACC_RDZV_TIMEOUT", 1, 1 << 24, "a number of seconds"))
    env.rendezvous_timeout = std::chrono::seconds(*seconds);
  if (auto interface = lookup("GLOO_SOCKET_IFNAME"); interface && !interface->empty())
    env.socket_interface = *interface;
  return env;
}

ACC_DECL ProcessEnvironment ProcessEnvironment::from_environment() {
  return from([](std::string_view name) -> std::optional<std::string> {
    if (const char* value = std::getenv(std::string(name).c_str())) return std::string(value);
    return std::nullopt;
  });
}

}  // namespace acc
