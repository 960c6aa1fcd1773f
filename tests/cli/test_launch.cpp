// `acc launch`'s flags and what the ranks are told: end to end (the real binary starts
// acc_launch_probe as its ranks), and in-process where the answer depends on the machine.
#include "launch_options.hpp"
#include "launcher_process.hpp"
#include "rank_environment.hpp"

#include <acc/config/config.hpp>

#include <doctest/doctest.h>

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <variant>
#include <vector>

using namespace acc::cli;
using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

int usable_cpus() {
  cpu_set_t cpus;
  REQUIRE(sched_getaffinity(0, sizeof cpus, &cpus) == 0);
  return CPU_COUNT(&cpus);
}

}  // namespace

TEST_CASE("acc launch sets the torchrun variables for 3 local CPU ranks") {
  const LauncherResult result = run_acc({"launch", "--cpu", "--num_processes", "3", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.err == "");
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 3);
  for (int rank = 0; rank < 3; ++rank) {
    CAPTURE(rank);
    const auto& env = ranks.at(rank);
    CHECK(env.at("LOCAL_RANK") == std::to_string(rank));
    CHECK(env.at("WORLD_SIZE") == "3");
    CHECK(env.at("LOCAL_WORLD_SIZE") == "3");
    CHECK(env.at("GROUP_RANK") == "0");
    CHECK(env.at("GROUP_WORLD_SIZE") == "1");
    CHECK(env.at("MASTER_ADDR") == "127.0.0.1");
    CHECK(env.at("MASTER_PORT") == "29500");
    CHECK(env.at("ACCELERATE_USE_CPU") == "true");
    CHECK(env.at("ACCELERATE_MIXED_PRECISION") == "<unset>");
    CHECK(env.at("CUDA_VISIBLE_DEVICES") == "<unset>");
    CHECK(env.at("ACC_RDZV_TIMEOUT") == "300");
    CHECK(env.at("OMP_NUM_THREADS") == std::to_string(std::max(1, usable_cpus() / 3)));
  }
}

TEST_CASE("acc launch on machine rank 1 of 2 runs global ranks 2 and 3") {
  const LauncherResult result = run_acc({"launch", "--num_processes", "4", "--num_machines", "2", "--machine_rank", "1",
                                         "--main_process_ip", "10.0.0.1", kProbe, "env"},
                                        {"OMP_NUM_THREADS=7"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 2);
  for (int rank : {2, 3}) {
    CAPTURE(rank);
    REQUIRE(ranks.count(rank) == 1);
    const auto& env = ranks.at(rank);
    CHECK(env.at("LOCAL_RANK") == std::to_string(rank - 2));
    CHECK(env.at("WORLD_SIZE") == "4");
    CHECK(env.at("LOCAL_WORLD_SIZE") == "2");
    CHECK(env.at("GROUP_RANK") == "1");
    CHECK(env.at("GROUP_WORLD_SIZE") == "2");
    CHECK(env.at("MASTER_ADDR") == "10.0.0.1");
    CHECK(env.at("ACCELERATE_USE_CPU") == "<unset>");
    CHECK(env.at("OMP_NUM_THREADS") == "7");  // the user's own setting wins
  }
}

TEST_CASE("acc launch --config_file: the file's settings, flags win over them, the ranks are told the file") {
  const auto folder = std::filesystem::temp_directory_path() / ("acc_launch_config_" + std::to_string(getpid()));
  std::filesystem::create_directories(folder);
  const auto file = folder / "job.yaml";
  std::ofstream(file) << "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 3\nmixed_precision: bf16\n";
  const LauncherResult from_file = run_acc({"launch", "--config_file", file.string(), kProbe, "env"});
  REQUIRE(from_file.finished_in_time);
  CHECK(from_file.exit_code == 0);
  const auto ranks = environments_by_rank(from_file.out);
  REQUIRE(ranks.size() == 3);
  CHECK(ranks.at(0).at("ACCELERATE_USE_CPU") == "true");
  CHECK(ranks.at(0).at("ACCELERATE_MIXED_PRECISION") == "bf16");
  CHECK(ranks.at(0).at("ACC_CONFIG_FILE") == file.string());
  CHECK(ranks.at(0).at("ACC_DISTRIBUTED_TYPE") == "MULTI_CPU");

  const LauncherResult flags_win = run_acc(
      {"launch", "--config_file=" + file.string(), "--num_processes", "2", "--mixed_precision", "no", kProbe, "env"});
  REQUIRE(flags_win.finished_in_time);
  const auto overridden = environments_by_rank(flags_win.out);
  REQUIRE(overridden.size() == 2);
  CHECK(overridden.at(1).at("ACCELERATE_MIXED_PRECISION") == "no");

  const LauncherResult environment_wins =
      run_acc({"launch", "--config_file", file.string(), kProbe, "env"}, {"ACCELERATE_MIXED_PRECISION=fp16"});
  REQUIRE(environment_wins.finished_in_time);
  CHECK(environments_by_rank(environment_wins.out).at(0).at("ACCELERATE_MIXED_PRECISION") == "fp16");

  std::ofstream(file) << "num_processes: 2\nmixed_precison: bf16\n";
  const LauncherResult bad = run_acc({"launch", "--config_file", file.string(), kProbe, "env"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err ==
        "acc launch: " + file.string() + ":2: unknown key 'mixed_precison'; did you mean 'mixed_precision'?\n");
  std::filesystem::remove_all(folder);
}

TEST_CASE("acc launch passes on --mixed_precision --rdzv_timeout and --main_process_port given as --flag=value") {
  const LauncherResult result = run_acc({"launch", "--num_processes=2", "--mixed_precision=bf16", "--rdzv_timeout=60",
                                         "--main_process_port=1234", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 2);
  for (const auto& [rank, env] : ranks) {
    CAPTURE(rank);
    CHECK(env.at("ACCELERATE_MIXED_PRECISION") == "bf16");
    CHECK(env.at("ACC_RDZV_TIMEOUT") == "60");
    CHECK(env.at("MASTER_PORT") == "1234");
  }
}

// GPUs are not on every machine that runs the tests: what depends on them is checked in-process,
// against a described machine.
TEST_CASE(
    "--multi_gpu --gpu_ids 2,3 on a machine with 4 GPUs runs one rank per listed GPU, told CUDA_VISIBLE_DEVICES") {
  const LaunchParse parsed = parse_launch_arguments({"--multi_gpu", "--gpu_ids=2,3", "train"}, Machine{4, 2});
  REQUIRE(std::holds_alternative<LaunchOptions>(parsed));
  const auto& options = std::get<LaunchOptions>(parsed);
  CHECK(options.num_processes == 2);
  CHECK(options.distributed_type == "MULTI_GPU");
  char entry[] = "PATH=/usr/bin";
  char* environment[] = {entry, nullptr};
  const std::vector<std::string> rank_1 = rank_environment(options, Machine{4, 2}, 1234, 0, 1, environment);
  for (const char* expected : {"CUDA_VISIBLE_DEVICES=2,3", "RANK=1", "WORLD_SIZE=2", "PATH=/usr/bin"}) {
    CAPTURE(expected);
    CHECK(std::count(rank_1.begin(), rank_1.end(), expected) == 1);
  }
}

TEST_CASE("--gpu_ids on a machine without a GPU is an error naming the flag and the missing CUDA device") {
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--gpu_ids", "0,1"}, {"--gpu_ids=all"}, {"--multi_gpu", "--gpu_ids", "0"}}) {
    std::vector<std::string> arguments = flags;
    arguments.push_back("train");
    const LaunchParse parsed = parse_launch_arguments(arguments, Machine{0, 2});
    REQUIRE(std::holds_alternative<UsageError>(parsed));
    const std::string& message = std::get<UsageError>(parsed).message;
    CHECK(message.rfind("--gpu_ids '", 0) == 0);
    CHECK(message.find("' names GPUs, but no CUDA device is present (no NVIDIA GPU in /proc/driver/nvidia/gpus); leave "
                       "it out, or pass --cpu to train on the CPU") != std::string::npos);
  }
  // Without a count, nothing says how many processes: the message must not send the user to --gpu_ids.
  const LaunchParse multi_gpu = parse_launch_arguments({"--multi_gpu", "train"}, Machine{0, 2});
  REQUIRE(std::holds_alternative<UsageError>(multi_gpu));
  CHECK(std::get<UsageError>(multi_gpu).message ==
        "--multi_gpu found no NVIDIA GPU in /proc/driver/nvidia/gpus; pass --num_processes N if the GPUs are there, or "
        "--cpu to train on the CPU");
}

TEST_CASE("more than 4 processes per usable CPU are refused unless --oversubscribe") {
  const auto parse = [](std::vector<std::string> arguments) {
    arguments.push_back("train");
    return parse_launch_arguments(arguments, Machine{0, 2});
  };
  const LaunchParse thousand = parse({"--num_processes", "1000"});
  REQUIRE(std::holds_alternative<UsageError>(thousand));
  CHECK(std::get<UsageError>(thousand).message ==
        "--num_processes 1000 would start 1000 processes on this machine, more than 4 per CPU (2 CPU(s) usable); "
        "pass a smaller --num_processes, or --oversubscribe to start them anyway");
  CHECK(std::holds_alternative<LaunchOptions>(parse({"--num_processes", "8"})));
  CHECK(std::holds_alternative<LaunchOptions>(parse({"--num_processes", "1000", "--oversubscribe"})));
  // What counts is this machine's share.
  CHECK(std::holds_alternative<LaunchOptions>(
      parse({"--num_processes", "16", "--num_machines", "2", "--main_process_ip", "10.0.0.1"})));
  CHECK(std::holds_alternative<UsageError>(
      parse({"--num_processes", "18", "--num_machines", "2", "--main_process_ip", "10.0.0.1"})));
}

// Runs what it starts on one CPU (children inherit the affinity), restoring the test's own after.
class OnOneCpu {
 public:
  OnOneCpu() {
    REQUIRE(sched_getaffinity(0, sizeof original_, &original_) == 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &original_)) {
        CPU_SET(cpu, &one);
        break;
      }
    REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  }
  ~OnOneCpu() { sched_setaffinity(0, sizeof original_, &original_); }
  OnOneCpu(const OnOneCpu&) = delete;
  OnOneCpu& operator=(const OnOneCpu&) = delete;

 private:
  cpu_set_t original_;
};

TEST_CASE(
    "acc launch limited to one CPU starts 4 ranks, refuses 5 without starting any, and starts 5 with --oversubscribe") {
  const OnOneCpu one_cpu;
  PidFile four, refused, oversubscribed;
  const LauncherResult four_ranks = run_acc({"launch", "--num_processes", "4", kProbe}, {four.variable()});
  CHECK(four_ranks.exit_code == 0);
  CHECK(four.pids().size() == 4);

  const LauncherResult five_ranks = run_acc({"launch", "--num_processes", "5", kProbe}, {refused.variable()});
  CHECK(five_ranks.exit_code == 2);
  CHECK(five_ranks.err ==
        "acc launch: --num_processes 5 would start 5 processes on this machine, more than 4 per CPU (1 CPU(s) usable); "
        "pass a smaller --num_processes, or --oversubscribe to start them anyway\n");
  CHECK(refused.pids().empty());

  const LauncherResult forced =
      run_acc({"launch", "--num_processes", "5", "--oversubscribe", kProbe}, {oversubscribed.variable()});
  CHECK(forced.exit_code == 0);
  CHECK(oversubscribed.pids().size() == 5);
}

TEST_CASE("acc launch --main_process_port 0 gives every rank the same free port") {
  const LauncherResult result =
      run_acc({"launch", "--cpu", "--num_processes", "2", "--main_process_port", "0", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 2);
  const int port = std::stoi(ranks.at(0).at("MASTER_PORT"));
  CHECK(port >= 1);
  CHECK(port <= 65535);
  CHECK(ranks.at(1).at("MASTER_PORT") == std::to_string(port));
}

TEST_CASE("bad flags give one line and exit code 2 and a program that cannot run gives 127") {
  char not_executable[] = "/tmp/acc_not_executable_XXXXXX";
  const int fd = mkstemp(not_executable);
  REQUIRE(fd >= 0);
  close(fd);

  struct Case {
    std::vector<std::string> arguments;
    int exit_code;
    std::string message;  // the start of the one line on stderr
  };
  const std::vector<Case> cases = {
      {{"--foo", "1", kProbe},
       2,
       "acc launch: unknown flag --foo; valid flags: -h/--help, --num_processes, --num_machines,"},
      {{"--num_processes", "0", kProbe}, 2, "acc launch: --num_processes '0' is not valid; use a positive integer"},
      {{"--num_processes", "abc", kProbe}, 2, "acc launch: --num_processes 'abc' is not valid; use a positive integer"},
      {{"--mixed_precision", "fp4", kProbe},
       2,
       "acc launch: --mixed_precision 'fp4' is not valid; use one of: no, fp16, bf16, fp8"},
      {{"--num_processes", "3", "--num_machines", "2", kProbe},
       2,
       "acc launch: --num_processes 3 is not divisible by --num_machines 2; each machine runs num_processes / "
       "num_machines processes"},
      {{"--config_file", "/nonexistent/x.yaml", kProbe},
       2,
       "acc launch: cannot read the config file /nonexistent/x.yaml; check the path, or write one with `acc config` "
       "(or `acc config default`)"},
      {{}, 2, "acc launch: no program given; usage: acc launch [flags] PROGRAM [ARGS...]"},
      {{"--cpu"}, 2, "acc launch: no program given; usage: acc launch [flags] PROGRAM [ARGS...]"},
      {{"--num_processes"}, 2, "acc launch: --num_processes needs a value: a positive integer"},
      {{"--cpu=yes", kProbe}, 2, "acc launch: --cpu takes no value"},
      {{"--gpu_ids", "0,0", kProbe},
       2,
       "acc launch: --gpu_ids '0,0' is not valid; use comma-separated distinct GPU indices such as 0,1, or all"},
      {{"--grace_period", "-1", kProbe},
       2,
       "acc launch: --grace_period '-1' is not valid; use a number of seconds from 0 to 86400"},
      {{"--num_machines", "2", "--machine_rank", "2", "--main_process_ip", "10.0.0.1", kProbe},
       2,
       "acc launch: --machine_rank '2' is not valid; use an integer from 0 to 1 (--num_machines 2)"},
      {{"--num_machines", "2", "--machine_rank", "1", kProbe},
       2,
       "acc launch: --main_process_ip is required on machine rank 1; pass the address of machine rank 0"},
      {{"--cpu", "--multi_gpu", kProbe}, 2, "acc launch: --cpu and --multi_gpu cannot be used together; pick one"},
      {{"no-such-program-for-acc"}, 127, "acc launch: cannot run 'no-such-program-for-acc': not found in PATH"},
      {{"--max_restarts", "2", "no-such-program-for-acc"},  // a program that cannot run is not restarted
       127,
       "acc launch: cannot run 'no-such-program-for-acc': not found in PATH"},
      {{"--max_restarts", "-1", kProbe},
       2,
       "acc launch: --max_restarts '-1' is not valid; use a whole number from 0 (no restart)"},
      {{"--num_processes", "2", not_executable},
       127,
       "acc launch: cannot run '" + std::string(not_executable) + "': Permission denied"},
  };
  for (const Case& bad : cases) {
    std::vector<std::string> arguments{"launch"};
    arguments.insert(arguments.end(), bad.arguments.begin(), bad.arguments.end());
    const LauncherResult result = run_acc(arguments, {}, 5s);
    CAPTURE(result.err);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == bad.exit_code);
    CHECK(result.err.rfind(bad.message, 0) == 0);
    CHECK(std::count(result.err.begin(), result.err.end(), '\n') == 1);
    CHECK(result.out == "");
  }
  unlink(not_executable);
}

TEST_CASE("acc --version and acc launch --help work and an unknown command is refused") {
  const LauncherResult version = run_acc({"--version"});
  CHECK(version.exit_code == 0);
  CHECK(version.out == "acc (accelerate-cpp) " ACC_VERSION_STRING "\n");

  const LauncherResult help = run_acc({"launch", "--cpu", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.rfind("usage: acc launch [flags] PROGRAM [ARGS...]", 0) == 0);

  CHECK(run_acc({"frobnicate"}).exit_code == 2);
}

TEST_CASE("--gradient_accumulation_steps, --debug and --num_cpu_threads_per_process reach every rank") {
  const LauncherResult result = run_acc({"launch", "--cpu", "--num_processes", "2", "--gradient_accumulation_steps",
                                         "4", "--debug", "--num_cpu_threads_per_process=3", kProbe, "env"},
                                        {"OMP_NUM_THREADS=7"});  // the flag wins over the environment's value
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.err == "");
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 2);
  for (const auto& [rank, env] : ranks) {
    CAPTURE(rank);
    CHECK(env.at("ACCELERATE_GRADIENT_ACCUMULATION_STEPS") == "4");
    CHECK(env.at("ACCELERATE_DEBUG_MODE") == "true");
    CHECK(env.at("OMP_NUM_THREADS") == "3");
  }

  // Without the flags, acc launch sets none of them (2 ranks: OMP_NUM_THREADS is the default share).
  const LauncherResult plain = run_acc({"launch", "--cpu", "--num_processes", "2", kProbe, "env"});
  REQUIRE(plain.finished_in_time);
  const auto plain_ranks = environments_by_rank(plain.out);
  REQUIRE(plain_ranks.size() == 2);
  CHECK(plain_ranks.at(0).at("ACCELERATE_GRADIENT_ACCUMULATION_STEPS") == "<unset>");
  CHECK(plain_ranks.at(0).at("ACCELERATE_DEBUG_MODE") == "<unset>");
}

TEST_CASE("--parallelism_config_* sizes reach every rank, win over the config file, and must fit the processes") {
  const auto folder = std::filesystem::temp_directory_path() / ("acc_launch_mesh_" + std::to_string(getpid()));
  std::filesystem::create_directories(folder);
  const auto file = folder / "job.yaml";
  std::ofstream(file) << "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 4\n"
                         "parallelism_config:\n  parallelism_config_tp_size: 4\n";
  const LauncherResult result =
      run_acc({"launch", "--config_file", file.string(), "--parallelism_config_dp_shard_size", "2",
               "--parallelism_config_tp_size", "2", "--parallelism_config_cp_size", "1", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.err == "");
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 4);
  for (const auto& [rank, env] : ranks) {
    CAPTURE(rank);
    CHECK(env.at("PARALLELISM_CONFIG_DP_SHARD_SIZE") == "2");
    CHECK(env.at("PARALLELISM_CONFIG_TP_SIZE") == "2");
    CHECK(env.at("PARALLELISM_CONFIG_DP_REPLICATE_SIZE") == "<unset>");
  }
  // What a rank's acc::Config makes of the file (tp 4) and the variables (tp 2).
  const auto& env = ranks.at(3);
  const acc::Config seen_by_rank =
      acc::Config::from_yaml_file(file).with_overrides([&](std::string_view name) -> std::optional<std::string> {
        const auto found = env.find(std::string(name));
        if (found == env.end() || found->second == "<unset>") return std::nullopt;
        return found->second;
      });
  CHECK(seen_by_rank.tp_size == 2);
  CHECK(seen_by_rank.dp_shard_size == 2);
  std::filesystem::remove_all(folder);

  struct Case {
    std::vector<std::string> arguments;
    std::string message;  // the whole line on stderr
  };
  const std::vector<Case> cases = {
      {{"--parallelism_config_tp_size", "3"},
       "acc launch: --parallelism_config_tp_size 3 does not divide --num_processes 4; each tensor-parallel group is "
       "tp_size processes"},
      {{"--parallelism_config_dp_replicate_size", "2", "--parallelism_config_dp_shard_size", "2",
        "--parallelism_config_tp_size", "2"},
       "acc launch: --parallelism_config_dp_replicate_size 2 x --parallelism_config_dp_shard_size 2 x tp_size 2 is "
       "not --num_processes 4; make their product the number of processes"},
      {{"--parallelism_config_tp_size", "0"},
       "acc launch: --parallelism_config_tp_size '0' is not valid; use a positive integer up to 1048576"},
      {{"--parallelism_config_cp_size", "2"},
       "acc launch: --parallelism_config_cp_size '2' is not valid; use 1 (context parallelism is not built yet)"},
  };
  for (const Case& bad : cases) {
    std::vector<std::string> arguments{"launch", "--cpu", "--num_processes", "4"};
    arguments.insert(arguments.end(), bad.arguments.begin(), bad.arguments.end());
    arguments.push_back(kProbe);
    const LauncherResult refused = run_acc(arguments, {}, 5s);
    CAPTURE(refused.err);
    REQUIRE(refused.finished_in_time);
    CHECK(refused.exit_code == 2);
    CHECK(refused.err == bad.message + "\n");
    CHECK(refused.out == "");
  }
}

TEST_CASE("--gradient_accumulation_steps and --debug win over the config file, as the ranks read it") {
  const auto folder = std::filesystem::temp_directory_path() / ("acc_launch_accumulation_" + std::to_string(getpid()));
  std::filesystem::create_directories(folder);
  const auto file = folder / "job.yaml";
  std::ofstream(file) << "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 2\n"
                         "gradient_accumulation_steps: 2\ndebug: false\n";
  const LauncherResult result = run_acc(
      {"launch", "--config_file", file.string(), "--gradient_accumulation_steps", "8", "--debug", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 2);
  const auto& env = ranks.at(1);
  CHECK(env.at("ACC_CONFIG_FILE") == file.string());
  // What a rank's acc::Config makes of the file and the variables it was given.
  const auto lookup = [&](std::string_view name) -> std::optional<std::string> {
    const auto found = env.find(std::string(name));
    if (found == env.end() || found->second == "<unset>") return std::nullopt;
    return found->second;
  };
  const acc::Config from_file = acc::Config::from_yaml_file(file);
  CHECK(from_file.gradient_accumulation_steps == 2);
  CHECK_FALSE(from_file.debug);
  const acc::Config seen_by_rank = from_file.with_overrides(lookup);
  CHECK(seen_by_rank.gradient_accumulation_steps == 8);
  CHECK(seen_by_rank.debug);
  std::filesystem::remove_all(folder);
}

TEST_CASE("the default OMP_NUM_THREADS: the usable CPUs shared by the local ranks, a preset value kept, none for one") {
  const LauncherResult two = run_acc({"launch", "--cpu", "--num_processes", "2", kProbe, "env"});
  REQUIRE(two.finished_in_time);
  const auto two_ranks = environments_by_rank(two.out);
  REQUIRE(two_ranks.size() == 2);
  for (const auto& [rank, env] : two_ranks) {
    CAPTURE(rank);
    CHECK(env.at("OMP_NUM_THREADS") == std::to_string(std::max(1, usable_cpus() / 2)));
  }

  const LauncherResult preset =
      run_acc({"launch", "--cpu", "--num_processes", "2", kProbe, "env"}, {"OMP_NUM_THREADS=5"});
  REQUIRE(preset.finished_in_time);
  const auto preset_ranks = environments_by_rank(preset.out);
  REQUIRE(preset_ranks.size() == 2);
  for (const auto& [rank, env] : preset_ranks) {
    CAPTURE(rank);
    CHECK(env.at("OMP_NUM_THREADS") == "5");
  }

  const LauncherResult one = run_acc({"launch", "--cpu", kProbe, "env"});
  REQUIRE(one.finished_in_time);
  const auto one_rank = environments_by_rank(one.out);
  REQUIRE(one_rank.size() == 1);
  CHECK(one_rank.at(0).at("OMP_NUM_THREADS") == "<unset>");

  // The rule itself, on described machines: CPUs / local ranks, at least 1.
  const auto threads = [](int cpus, const std::vector<std::string>& flags, std::vector<std::string> environment) {
    std::vector<std::string> arguments = flags;
    arguments.push_back("train");
    const LaunchParse parsed = parse_launch_arguments(arguments, Machine{0, cpus});
    REQUIRE(std::holds_alternative<LaunchOptions>(parsed));
    std::vector<char*> pointers;
    for (std::string& entry : environment) pointers.push_back(entry.data());
    pointers.push_back(nullptr);
    for (const std::string& entry :
         rank_environment(std::get<LaunchOptions>(parsed), Machine{0, cpus}, 29500, 0, 0, pointers.data()))
      if (entry.rfind("OMP_NUM_THREADS=", 0) == 0) return entry.substr(16);
    return std::string("<unset>");
  };
  CHECK(threads(16, {"--num_processes", "2"}, {}) == "8");
  CHECK(threads(16, {"--num_processes", "3"}, {}) == "5");
  CHECK(threads(2, {"--num_processes", "4"}, {}) == "1");
  CHECK(threads(16, {"--num_processes", "1"}, {}) == "<unset>");
  CHECK(threads(16, {"--num_processes", "2"}, {"OMP_NUM_THREADS=3"}) == "3");
  CHECK(threads(16, {"--num_processes", "1", "--num_cpu_threads_per_process", "6"}, {}) == "6");
  CHECK(threads(16, {"--num_processes", "2", "--num_cpu_threads_per_process", "6"}, {"OMP_NUM_THREADS=3"}) == "6");
}

TEST_CASE("the new flags' bad values are usage errors naming the flag and what it accepts, and start no rank") {
  const auto folder = std::filesystem::temp_directory_path() / ("acc_launch_bad_flags_" + std::to_string(getpid()));
  std::filesystem::create_directories(folder);
  const auto regular_file = folder / "a_file";
  std::ofstream(regular_file) << "not a directory\n";
  const std::string unusable = (regular_file / "logs").string();

  struct Case {
    std::vector<std::string> arguments;
    std::string message;  // the whole line on stderr
  };
  const std::vector<Case> cases = {
      {{"--gradient_accumulation_steps", "0"},
       "acc launch: --gradient_accumulation_steps '0' is not valid; use a positive integer up to 1048576"},
      {{"--gradient_accumulation_steps=2000000"},
       "acc launch: --gradient_accumulation_steps '2000000' is not valid; use a positive integer up to 1048576"},
      {{"--gradient_accumulation_steps", "two"},
       "acc launch: --gradient_accumulation_steps 'two' is not valid; use a positive integer up to 1048576"},
      {{"--debug=true"}, "acc launch: --debug takes no value"},
      {{"--num_cpu_threads_per_process", "0"},
       "acc launch: --num_cpu_threads_per_process '0' is not valid; use a positive integer"},
      {{"--num_cpu_threads_per_process", "-2"},
       "acc launch: --num_cpu_threads_per_process '-2' is not valid; use a positive integer"},
      {{"--num_cpu_threads_per_process", "--debug"},
       "acc launch: --num_cpu_threads_per_process needs a value: a positive integer"},
      {{"--monitor_interval", "often"},
       "acc launch: --monitor_interval 'often' is not valid; use a number of seconds from 0 to 86400"},
      {{"--log_dir="}, "acc launch: --log_dir '' is not valid; use a directory to write the ranks' output to"},
      {{"--log_dir", unusable},
       "acc launch: --log_dir '" + unusable +
           "' cannot be used: cannot create the directory: Not a directory; pass a directory that acc launch can "
           "create and write to"},
  };
  for (const Case& bad : cases) {
    PidFile pids;
    std::vector<std::string> arguments{"launch", "--num_processes", "2"};
    arguments.insert(arguments.end(), bad.arguments.begin(), bad.arguments.end());
    arguments.push_back(kProbe);
    const LauncherResult result = run_acc(arguments, {pids.variable()}, 5s);
    CAPTURE(result.err);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == 2);
    CHECK(result.err == bad.message + "\n");
    CHECK(result.out == "");
    CHECK(pids.pids().empty());
  }
  std::filesystem::remove_all(folder);
}

TEST_CASE("--monitor_interval is accepted and the help lists every new flag") {
  const LauncherResult result =
      run_acc({"launch", "--monitor_interval", "0.5", "--num_processes", "2", "--cpu", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(environments_by_rank(result.out).size() == 2);

  const std::string help = run_acc({"launch", "--help"}).out;
  for (const char* flag :
       {"  --gradient_accumulation_steps N\n", "  --debug ", "  --num_cpu_threads_per_process N\n", "  --log_dir DIR ",
        "  --monitor_interval S ", "  --parallelism_config_tp_size T\n", "  --parallelism_config_cp_size C\n"}) {
    CAPTURE(flag);
    CHECK(help.find(flag) != std::string::npos);
  }
  CHECK(help.find("acc launch does not poll its ranks") != std::string::npos);
}
