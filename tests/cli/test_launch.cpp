// `acc launch` end to end: the real binary starts acc_launch_probe as its ranks.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

const std::string kProbe = "acc_launch_probe";  // found through PATH, as a user's program would be

// The probe's `env` lines, by RANK: variable name -> value ("<unset>" when unset).
std::map<int, std::map<std::string, std::string>> environments_by_rank(const std::string& out) {
  std::map<int, std::map<std::string, std::string>> by_rank;
  for (const std::string& line : lines_of(out)) {
    if (line.rfind("env ", 0) != 0) continue;
    std::map<std::string, std::string> variables;
    std::size_t start = 4;
    while (start < line.size()) {
      std::size_t end = line.find(' ', start);
      if (end == std::string::npos) end = line.size();
      const std::string entry = line.substr(start, end - start);
      variables[entry.substr(0, entry.find('='))] = entry.substr(entry.find('=') + 1);
      start = end + 1;
    }
    by_rank[std::stoi(variables["RANK"])] = variables;
  }
  return by_rank;
}

int usable_cpus() {
  cpu_set_t cpus;
  REQUIRE(sched_getaffinity(0, sizeof cpus, &cpus) == 0);
  return CPU_COUNT(&cpus);
}

std::string pid_file_variable(const PidFile& pids) { return "ACC_PROBE_PID_FILE=" + pids.path(); }

void check_none_left(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    CAPTURE(pid);
    CHECK(is_gone(pid));
  }
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

TEST_CASE(
    "acc launch passes on --gpu_ids --mixed_precision --rdzv_timeout and --main_process_port given as --flag=value") {
  const LauncherResult result = run_acc({"launch", "--multi_gpu", "--gpu_ids=2,3", "--mixed_precision=bf16",
                                         "--rdzv_timeout=60", "--main_process_port=1234", kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  const auto ranks = environments_by_rank(result.out);
  REQUIRE(ranks.size() == 2);  // one process per GPU in --gpu_ids
  for (const auto& [rank, env] : ranks) {
    CAPTURE(rank);
    CHECK(env.at("CUDA_VISIBLE_DEVICES") == "2,3");
    CHECK(env.at("ACCELERATE_MIXED_PRECISION") == "bf16");
    CHECK(env.at("ACC_RDZV_TIMEOUT") == "60");
    CHECK(env.at("MASTER_PORT") == "1234");
  }
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

TEST_CASE("a rank that exits 3 stops the job within seconds with exit code 3 and nothing left") {
  PidFile pids;
  // Each of the 3 ranks records its pid and its child's; rank 1 fails once all 6 are recorded.
  const LauncherResult result = run_acc({"launch", "--cpu", "--num_processes", "3", kProbe, "spawn-child",
                                         "wait-for-pids", "6", "exit-on-rank", "1", "3", "sleep", "60"},
                                        {pid_file_variable(pids)});
  REQUIRE(result.finished_in_time);
  MESSAGE("acc launch ran " << result.seconds << " s in all: start, rank 1 exits 3, the others stopped");
  CHECK(result.exit_code == 3);
  CHECK(result.seconds < 3.0);
  CHECK(result.err.find("acc launch: rank 1 (pid ") != std::string::npos);
  CHECK(result.err.find(") exited with code 3; stopping the other 2 rank(s)") != std::string::npos);
  REQUIRE(pids.pids().size() == 6);
  check_none_left(pids.pids());
}

TEST_CASE("a rank killed by a signal makes acc launch exit 128 + signal") {
  const LauncherResult result = run_acc({"launch", "--num_processes", "1", "sh", "-c", "kill -KILL $$"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGKILL);
  CHECK(result.err.find(") was killed by signal SIGKILL") != std::string::npos);
}

TEST_CASE("a rank that ignores SIGTERM is SIGKILLed after --grace_period") {
  PidFile pids;
  const LauncherResult result = run_acc({"launch", "--cpu", "--num_processes", "2", "--grace_period", "1", kProbe,
                                         "ignore-term", "wait-for-pids", "2", "exit-on-rank", "0", "1", "sleep", "60"},
                                        {pid_file_variable(pids)});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 1);
  CHECK(result.seconds >= 1.0);
  CHECK(result.seconds < 4.0);
  CHECK(result.err.find("still run 1 s after SIGTERM; sending SIGKILL") != std::string::npos);
  REQUIRE(pids.pids().size() == 2);
  check_none_left(pids.pids());
}

TEST_CASE("SIGTERM or SIGINT sent to acc launch ends every rank and its children") {
  for (int signal : {SIGTERM, SIGINT}) {
    CAPTURE(signal);
    PidFile pids;
    Launcher launcher({"launch", "--cpu", "--num_processes", "2", kProbe, "spawn-child", "sleep", "60"},
                      {pid_file_variable(pids)});
    REQUIRE(pids.wait_for(4, 5s));
    kill(launcher.pid(), signal);
    const LauncherResult result = launcher.wait(5s);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == 128 + signal);
    CHECK(result.err.find("acc launch: received SIG") != std::string::npos);
    CHECK(result.seconds < 3.0);
    check_none_left(pids.pids());
  }
}

TEST_CASE("when acc launch is SIGKILLed its ranks and their children die with it") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "2", kProbe, "spawn-child", "sleep", "60"},
                    {pid_file_variable(pids)});
  REQUIRE(pids.wait_for(4, 5s));
  kill(launcher.pid(), SIGKILL);
  const LauncherResult result = launcher.wait(5s);
  CHECK(result.exit_code == 128 + SIGKILL);
  const std::vector<pid_t> survivors = survivors_after(pids.pids(), 2s);
  CHECK(survivors.empty());
}

// The values of `name` in the probe's env lines, in the order printed.
std::vector<std::string> printed_values(const std::string& out, const std::string& name) {
  std::vector<std::string> values;
  for (const std::string& line : lines_of(out)) {
    const std::size_t start = line.find(" " + name + "=");
    if (line.rfind("env ", 0) != 0 || start == std::string::npos) continue;
    const std::size_t value = start + name.size() + 2;
    values.push_back(line.substr(value, line.find(' ', value) - value));
  }
  return values;
}

TEST_CASE("acc launch --max_restarts 2 starts the group again after each failure, each start told its count") {
  PidFile pids;
  // Rank 1 fails in the first two starts; the third runs to the end.
  const LauncherResult result = run_acc(
      {"launch",      "--cpu", "--num_processes", "2", "--max_restarts", "2", "--main_process_port", "0", kProbe,
       "spawn-child", "env",   "wait-for-pids",   "4", "until-restart",  "2", "exit-on-rank",        "1", "3",
       "sleep",       "60"},
      {pid_file_variable(pids)});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.seconds < 8.0);
  auto counts = printed_values(result.out, "TORCHELASTIC_RESTART_COUNT");
  std::sort(counts.begin(), counts.end());
  CHECK(counts == std::vector<std::string>{"0", "0", "1", "1", "2", "2"});
  CHECK(printed_values(result.out, "TORCHELASTIC_MAX_RESTARTS") == std::vector<std::string>(6, "2"));
  CHECK(result.err.find("exited with code 3; stopping the other 1 rank(s)") != std::string::npos);
  CHECK(result.err.find("acc launch: restart 1 of 2: starting the 2 local rank(s) again\n") != std::string::npos);
  CHECK(result.err.find("acc launch: restart 2 of 2: starting the 2 local rank(s) again\n") != std::string::npos);
  REQUIRE(pids.pids().size() == 12);  // 3 starts of 2 ranks, each with a child
  check_none_left(pids.pids());
}

TEST_CASE("acc launch --max_restarts 1 gives up after one restart with the last failure's code") {
  const LauncherResult result =
      run_acc({"launch", "--max_restarts", "1", "sh", "-c", "exit $((3 + TORCHELASTIC_RESTART_COUNT))"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 4);
  CHECK(result.err.find(") exited with code 3\nacc launch: restart 1 of 1: starting the 1 local rank(s) again\n") !=
        std::string::npos);
  CHECK(
      result.err.find(") exited with code 4\nacc launch: no restart left (--max_restarts 1); exiting with code 4\n") !=
      std::string::npos);
}

TEST_CASE("SIGTERM sent to acc launch ends the job even with restarts left") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "2", "--max_restarts", "3", kProbe, "sleep", "60"},
                    {pid_file_variable(pids)});
  REQUIRE(pids.wait_for(2, 5s));
  kill(launcher.pid(), SIGTERM);
  const LauncherResult result = launcher.wait(5s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGTERM);
  CHECK(result.err.find("restart") == std::string::npos);
  CHECK(pids.pids().size() == 2);
  check_none_left(pids.pids());
}

TEST_CASE("processes a successful rank leaves behind are stopped too") {
  PidFile pids;
  const LauncherResult result = run_acc({"launch", "--num_processes", "2", kProbe, "spawn-child", "wait-for-pids", "4"},
                                        {pid_file_variable(pids)});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.err.find("processes they started still run") != std::string::npos);
  REQUIRE(pids.pids().size() == 4);
  check_none_left(pids.pids());
}

TEST_CASE("acc launch --tee prefixes every line with its rank and keeps stdout and stderr apart") {
  const LauncherResult result = run_acc({"launch", "--tee", "--num_processes", "2", kProbe, "print-lines"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  for (int rank : {0, 1}) {
    CAPTURE(rank);
    const std::string prefix = "[rank " + std::to_string(rank) + "] ";
    std::vector<std::string> out, err;
    for (const std::string& line : lines_of(result.out))
      if (line.rfind(prefix, 0) == 0) out.push_back(line.substr(prefix.size()));
    for (const std::string& line : lines_of(result.err))
      if (line.rfind(prefix, 0) == 0) err.push_back(line.substr(prefix.size()));
    CHECK(out == std::vector<std::string>{"out line 1", "out line 2", "no newline at end"});
    CHECK(err == std::vector<std::string>{"err line 1"});
  }
  CHECK(lines_of(result.out).size() == 6);  // nothing without a prefix
  CHECK(lines_of(result.err).size() == 2);
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
      {{"--mixed_precision", "fp8", kProbe},
       2,
       "acc launch: --mixed_precision 'fp8' is not valid; use one of: no, fp16, bf16"},
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
