#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/accelerator.hpp>
#include <acc/comm/device.hpp>
#include <acc/config/environment.hpp>
#include <acc/tracking/logger.hpp>
#include <acc/tracking/progress_bar.hpp>

#include <map>
#include <string>

namespace {

acc::ProcessEnvironment parse(const std::map<std::string, std::string>& vars) {
  return acc::ProcessEnvironment::from([&](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    parse(vars);
  } catch (const acc::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("no launcher variables: one process on rank 0") {
  const auto env = parse({});
  CHECK(env.rank == 0);
  CHECK(env.world_size == 1);
  CHECK(env.local_rank == 0);
  CHECK(env.num_nodes == 1);
  CHECK(env.launcher == "single process");
  CHECK_FALSE(env.is_distributed());
  CHECK(env.master_addr == "127.0.0.1");
  CHECK(env.master_port == 29500);
}

TEST_CASE("the rendezvous timeout and Gloo's interface are read with the other launcher variables") {
  const auto defaults = parse({});
  CHECK(defaults.rendezvous_timeout == std::chrono::seconds(300));
  CHECK_FALSE(defaults.socket_interface.has_value());
  const auto env = parse({{"ACC_RDZV_TIMEOUT", "42"}, {"GLOO_SOCKET_IFNAME", "eth1"}});
  CHECK(env.rendezvous_timeout == std::chrono::seconds(42));
  CHECK(env.socket_interface == "eth1");
  CHECK(error_of({{"ACC_RDZV_TIMEOUT", "soon"}}) ==
        "ACC_RDZV_TIMEOUT='soon' is not an integer; set it to a number of seconds");
  CHECK(error_of({{"ACC_RDZV_TIMEOUT", "0"}}) ==
        "ACC_RDZV_TIMEOUT=0 is out of range [1, 16777216]; set it to a number of seconds");
  CHECK_FALSE(parse({{"GLOO_SOCKET_IFNAME", ""}}).socket_interface.has_value());  // empty: unset, as Gloo reads it
}

TEST_CASE("torchrun variables (also what acc launch sets)") {
  const auto env = parse({{"RANK", "5"},
                          {"WORLD_SIZE", "8"},
                          {"LOCAL_RANK", "1"},
                          {"LOCAL_WORLD_SIZE", "4"},
                          {"GROUP_RANK", "1"},
                          {"MASTER_ADDR", "10.1.2.3"},
                          {"MASTER_PORT", "1234"}});
  CHECK(env.launcher == "torchrun");
  CHECK(env.rank == 5);
  CHECK(env.world_size == 8);
  CHECK(env.local_rank == 1);
  CHECK(env.local_world_size == 4);
  CHECK(env.node_rank == 1);
  CHECK(env.num_nodes == 2);
  CHECK(env.master_addr == "10.1.2.3");
  CHECK(env.master_port == 1234);
  CHECK_FALSE(env.is_main_process());
  CHECK_FALSE(env.is_local_main_process());
}

TEST_CASE("torchrun without LOCAL_* means one node") {
  const auto env = parse({{"RANK", "2"}, {"WORLD_SIZE", "3"}});
  CHECK(env.local_rank == 2);
  CHECK(env.local_world_size == 3);
  CHECK(env.node_rank == 0);
}

TEST_CASE("Open MPI variables") {
  const auto env = parse({{"OMPI_COMM_WORLD_RANK", "3"},
                          {"OMPI_COMM_WORLD_SIZE", "4"},
                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                          {"MASTER_ADDR", "node0"}});
  CHECK(env.launcher == "Open MPI");
  CHECK(env.rank == 3);
  CHECK(env.world_size == 4);
  CHECK(env.local_rank == 1);
  CHECK(env.node_rank == 1);
  CHECK(env.num_nodes == 2);
  CHECK(env.master_addr == "node0");
}

TEST_CASE("SLURM variables, tasks per node from SLURM_TASKS_PER_NODE") {
  const auto env = parse({{"SLURM_PROCID", "6"},
                          {"SLURM_NTASKS", "7"},
                          {"SLURM_LOCALID", "0"},
                          {"SLURM_NODEID", "2"},
                          {"SLURM_TASKS_PER_NODE", "3(x2),1"},
                          {"SLURM_LAUNCH_NODE_IPADDR", "192.0.2.7"}});
  CHECK(env.launcher == "SLURM");
  CHECK(env.rank == 6);
  CHECK(env.world_size == 7);
  CHECK(env.local_world_size == 1);
  CHECK(env.node_rank == 2);
  CHECK(env.master_addr == "192.0.2.7");
  const auto first_node = parse({{"SLURM_PROCID", "1"},
                                 {"SLURM_NTASKS", "7"},
                                 {"SLURM_LOCALID", "1"},
                                 {"SLURM_NODEID", "0"},
                                 {"SLURM_TASKS_PER_NODE", "3(x2),1"}});
  CHECK(first_node.local_world_size == 3);
}

TEST_CASE("torchrun variables win over SLURM's when both are set") {
  const auto env = parse({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  CHECK(env.launcher == "torchrun");
  CHECK(env.rank == 1);
}

TEST_CASE("ACCELERATE_* variables") {
  CHECK(parse({{"ACCELERATE_USE_CPU", "true"}}).use_cpu);
  CHECK(parse({{"ACCELERATE_USE_CPU", "1"}}).use_cpu);
  CHECK_FALSE(parse({{"ACCELERATE_USE_CPU", "False"}}).use_cpu);
  CHECK(parse({{"ACCELERATE_MIXED_PRECISION", "bf16"}}).mixed_precision == std::optional<std::string>("bf16"));
  CHECK_FALSE(parse({}).mixed_precision.has_value());
}

TEST_CASE("malformed and inconsistent values give errors that name the variable and the fix") {
  CHECK(error_of({{"RANK", "abc"}, {"WORLD_SIZE", "2"}}) ==
        "RANK='abc' is not an integer; set it to this process's rank in 0..WORLD_SIZE-1");
  CHECK(error_of({{"RANK", "1x"}, {"WORLD_SIZE", "2"}}).find("RANK='1x' is not an integer") == 0);
  CHECK(error_of({{"RANK", "0"}}) ==
        "WORLD_SIZE is not set but RANK is; set WORLD_SIZE to the total number of processes");
  CHECK(error_of({{"WORLD_SIZE", "2"}}) ==
        "RANK is not set but WORLD_SIZE is; set RANK to this process's rank in 0..WORLD_SIZE-1");
  CHECK(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}) ==
        "rank 2 (from torchrun variables) is not below the world size 2; ranks run from 0 to world size - 1");
  CHECK(error_of({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}).find("RANK=-1 is out of range [0, ") == 0);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("WORLD_SIZE=0 is out of range [1, ") == 0);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}})
            .find("local rank 2 is not below the local world size 2") == 0);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "4"}})
            .find("the local world size 4 exceeds the world size 2") == 0);
  CHECK(error_of({{"MASTER_PORT", "70000"}}) ==
        "MASTER_PORT=70000 is out of range [1, 65535]; set it to a free TCP port on rank 0's machine");
  CHECK(error_of({{"MASTER_ADDR", ""}}).find("MASTER_ADDR is set but empty") == 0);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "2"}}) ==
        "MASTER_ADDR is not set but the job spans 2 nodes; export MASTER_ADDR=<address of rank 0's machine> on every "
        "node");
  CHECK(error_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}})
            .find("OMPI_COMM_WORLD_LOCAL_RANK is not set") == 0);
  CHECK(
      error_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_TASKS_PER_NODE", "2(x"}})
          .find("SLURM_TASKS_PER_NODE") != std::string::npos);
  CHECK(error_of({{"ACCELERATE_USE_CPU", "maybe"}}) ==
        "ACCELERATE_USE_CPU='maybe' is not a boolean; use true/false (or 1/0, yes/no)");
  // As the config loader (and Accelerate's str_to_bool) has it: an empty value is not false.
  CHECK(error_of({{"ACCELERATE_USE_CPU", ""}}) ==
        "ACCELERATE_USE_CPU='' is not a boolean; use true/false (or 1/0, yes/no)");
  CHECK(error_of({{"ACCELERATE_MIXED_PRECISION", "fp4"}}) ==
        "ACCELERATE_MIXED_PRECISION='fp4' is not supported; use one of: no, fp16, bf16, fp8");
}

TEST_CASE("the CPU is chosen when ACCELERATE_USE_CPU is set or asked for") {
  CHECK(acc::default_device(parse({{"ACCELERATE_USE_CPU", "yes"}})).is_cpu());
  CHECK(acc::default_device(parse({}), /*force_cpu=*/true).is_cpu());
}

// Found: AcceleratorOptions(), LoggerOptions() and ProgressBarOptions() read the process's
// variables in their default initialisers, so a bad one failed where no environment was wanted.
TEST_CASE("options are plain values: the environment is read when the Accelerator or logger is made") {
  struct Variables {
    std::vector<std::pair<std::string, std::optional<std::string>>> saved;
    void set(const char* name, const char* value) {
      const char* before = std::getenv(name);
      saved.emplace_back(name, before ? std::optional<std::string>(before) : std::nullopt);
      setenv(name, value, 1);
    }
    ~Variables() {  // last first, so that a variable set twice gets its first value back
      for (auto entry = saved.rbegin(); entry != saved.rend(); ++entry)
        if (const auto& [name, value] = *entry; value)
          setenv(name.c_str(), value->c_str(), 1);
        else
          unsetenv(name.c_str());
    }
  } variables;
  variables.set("RANK", "0");
  variables.set("WORLD_SIZE", "two");
  variables.set("ACCELERATE_LOG_LEVEL", "LOUD");
  CHECK_NOTHROW(acc::AcceleratorOptions());
  CHECK_NOTHROW(acc::LoggerOptions());
  CHECK_NOTHROW(acc::ProgressBarOptions(10));
  CHECK_FALSE(acc::AcceleratorOptions().environment().has_value());
  // An Accelerator (or logger) without an environment of its own reads the launcher's, as before.
  CHECK_THROWS_WITH_AS(acc::Accelerator<>(),
                       "WORLD_SIZE='two' is not an integer; set it to the total number of processes", acc::Error);
  CHECK_THROWS_WITH_AS(acc::get_logger("x"),
                       "WORLD_SIZE='two' is not an integer; set it to the total number of processes", acc::Error);
  CHECK(acc::get_logger("x", acc::LoggerOptions().environment(acc::ProcessEnvironment{})).level() ==
        acc::LogLevel::warning);
  CHECK_THROWS_WITH_AS(acc::ProgressBar(acc::ProgressBarOptions(10)), doctest::Contains("WORLD_SIZE='two'"),
                       acc::Error);
  variables.set("WORLD_SIZE", "1");
  CHECK_THROWS_WITH_AS(acc::get_logger("x"),
                       "ACCELERATE_LOG_LEVEL is 'LOUD'; allowed values: DEBUG, INFO, WARNING, ERROR, CRITICAL",
                       acc::Error);
}

// The launcher's variables still reach an Accelerator made without options, as Python's
// Accelerator() reads them; ProcessGroupOptions' own default initialisers read them no more.
TEST_CASE("Accelerator<> without options takes the options the environment sets") {
  struct Variables {
    std::vector<std::string> names;
    void set(const char* name, const char* value) {
      REQUIRE(std::getenv(name) == nullptr);
      names.emplace_back(name);
      setenv(name, value, 1);
    }
    ~Variables() {
      for (const auto& name : names) unsetenv(name.c_str());
    }
  } variables;
  variables.set("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "3");
  variables.set("ACC_COLLECTIVE_TIMEOUT", "7");
  variables.set("ACCELERATE_DEBUG_MODE", "true");
  const acc::Accelerator<> accelerator;
  CHECK(accelerator.options().gradient_accumulation_steps() == 3);
  CHECK(accelerator.options().process_group().timeout() == std::chrono::seconds(7));
  CHECK(accelerator.options().process_group().debug());
  CHECK(acc::AcceleratorOptions().gradient_accumulation_steps() == 1);  // a plain value
  CHECK(acc::AcceleratorOptions().process_group().timeout() == std::chrono::seconds(1800));
}
