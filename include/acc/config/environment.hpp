// Where this process sits in the job (rank, world size, node, rendezvous address), read from the
// variables that `acc launch`, torchrun, Open MPI or SLURM set. Free of libtorch, so that the `acc`
// tool can use it too (the device this implies is comm/device.hpp's).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace acc {

// Returns the value of an environment variable, or nothing when it is unset.
using EnvironmentLookup = std::function<std::optional<std::string>(std::string_view)>;

struct ProcessEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  int num_nodes = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Which launcher's variables described the job: "single process", "torchrun" (also what
  // `acc launch` sets), "Open MPI" or "SLURM".
  std::string launcher = "single process";
  bool use_cpu = false;                        // ACCELERATE_USE_CPU
  std::optional<std::string> mixed_precision;  // ACCELERATE_MIXED_PRECISION: no, fp16 or bf16
  std::optional<std::string> log_level;        // ACCELERATE_LOG_LEVEL (acc::get_logger checks it)
  // How long ranks wait for each other at rendezvous: ACC_RDZV_TIMEOUT (acc launch --rdzv_timeout).
  std::chrono::seconds rendezvous_timeout{300};
  std::optional<std::string> socket_interface;  // GLOO_SOCKET_IFNAME: the interface Gloo connects on

  bool is_distributed() const { return world_size > 1; }
  bool is_main_process() const { return rank == 0; }
  bool is_local_main_process() const { return local_rank == 0; }

  static ProcessEnvironment from(const EnvironmentLookup& lookup);
  static ProcessEnvironment from_environment();
};

namespace detail {

ACC_DECL int parse_env_int(std::string_view name, const std::string& value, int min, int max, std::string_view meaning);

// Accelerate's spellings of a boolean (its str_to_bool), in YAML files and in the environment; like
// str_to_bool, an empty string is none of them.
inline std::optional<bool> parse_bool(std::string v) {
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v == "true" || v == "yes" || v == "y" || v == "t" || v == "on" || v == "1") return true;
  if (v == "false" || v == "no" || v == "n" || v == "f" || v == "off" || v == "0") return false;
  return std::nullopt;
}

// parse_bool for the variable `name`, whose value must be a boolean.
ACC_DECL bool parse_env_bool(std::string_view name, const std::string& value);

// SLURM_TASKS_PER_NODE looks like "4(x2),3": 4 tasks on each of the first two nodes, 3 on the third.
ACC_DECL int slurm_tasks_on_node(const std::string& spec, int node);

// The values the config schema allows for mixed_precision (config_keys(), impl/config.ipp), which
// ACCELERATE_MIXED_PRECISION is checked against.
ACC_DECL const std::vector<std::string>& mixed_precision_values();

}  // namespace detail

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/config/impl/environment.ipp>
// Defines detail::mixed_precision_values, which the bodies above use.
#include <acc/config/config.hpp>
#endif
