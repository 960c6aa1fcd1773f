// acc launch --max_restarts: the local group started again after a rank fails, after a pause that
// doubles from one restart to the next.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

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

}  // namespace

TEST_CASE("acc launch --max_restarts 2 starts the group again after each failure, each start told its count") {
  PidFile pids;
  // Rank 1 fails in the first two starts; the third runs to the end. Each rank prints before its
  // child records its pid, so that no rank is stopped before it printed.
  const std::vector<std::string> launch = {
      "launch",          "--cpu", "--num_processes",     "2", "--max_restarts", "2",
      "--restart_delay", "0.1",   "--main_process_port", "0"};
  const std::vector<std::string> probe = {
      kProbe,         "env", "spawn-child", "wait-for-pids", "4", "until-restart", "2",
      "exit-on-rank", "1",   "3",           "sleep",         "60"};
  std::vector<std::string> arguments = launch;
  arguments.insert(arguments.end(), probe.begin(), probe.end());
  const LauncherResult result = run_acc(arguments, {pids.variable()});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.seconds < 8.0);
  CAPTURE(result.out);
  CAPTURE(result.err);
  auto counts = printed_values(result.out, "TORCHELASTIC_RESTART_COUNT");
  std::sort(counts.begin(), counts.end());
  CHECK(counts == std::vector<std::string>{"0", "0", "1", "1", "2", "2"});
  CHECK(printed_values(result.out, "TORCHELASTIC_MAX_RESTARTS") == std::vector<std::string>(6, "2"));
  CHECK(result.err.find("exited with code 3; stopping the other 1 rank(s)") != std::string::npos);
  CHECK(result.err.find("acc launch: restart 1 of 2 in 0.1 s: starting the 2 local rank(s) again\n") !=
        std::string::npos);
  CHECK(result.err.find("acc launch: restart 2 of 2 in 0.2 s: starting the 2 local rank(s) again\n") !=
        std::string::npos);
  REQUIRE(pids.pids().size() == 12);  // 3 starts of 2 ranks, each with a child
  check_none_left(pids.pids());
}

TEST_CASE("acc launch --max_restarts 1 gives up after one restart with the last failure's code") {
  const LauncherResult result = run_acc({"launch", "--max_restarts", "1", "--restart_delay", "0", "sh", "-c",
                                         "exit $((3 + TORCHELASTIC_RESTART_COUNT))"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 4);
  CHECK(result.err.find(
            ") exited with code 3\nacc launch: restart 1 of 1 in 0 s: starting the 1 local rank(s) again\n") !=
        std::string::npos);
  CHECK(
      result.err.find(") exited with code 4\nacc launch: no restart left (--max_restarts 1); exiting with code 4\n") !=
      std::string::npos);
}

TEST_CASE("SIGTERM sent to acc launch ends the job even with restarts left") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "2", "--max_restarts", "3", kProbe, "sleep", "60"},
                    {pids.variable()});
  REQUIRE(pids.wait_for(2, 5s));
  kill(launcher.pid(), SIGTERM);
  const LauncherResult result = launcher.wait(5s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGTERM);
  CHECK(result.err.find("restart") == std::string::npos);
  CHECK(pids.pids().size() == 2);
  check_none_left(pids.pids());
}

// Found: the signal was passed on, but the group's end still counted as the rank's failure, and
// the job started again.
TEST_CASE("SIGINT sent to acc launch while a failed rank's group is stopping ends the job, without a restart") {
  PidFile pids;
  // Rank 1 fails; rank 0 ignores the SIGTERM that stops the group, and the grace period is long, so
  // the group is still stopping when SIGINT comes (which ends rank 0).
  Launcher launcher({"launch", "--cpu", "--num_processes", "2", "--max_restarts", "3", "--grace_period", "30", kProbe,
                     "ignore-term", "wait-for-pids", "2", "exit-on-rank", "1", "3", "sleep", "60"},
                    {pids.variable()});
  REQUIRE(pids.wait_for(2, 5s));
  // acc launch reaps the failed rank and signals the group in one step: once a pid is gone, the
  // group is stopping.
  const auto gone = [&] {
    const auto recorded = pids.pids();
    return std::any_of(recorded.begin(), recorded.end(), [](pid_t pid) { return kill(pid, 0) != 0; });
  };
  const auto deadline = Clock::now() + 10s;
  while (!gone() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  REQUIRE(gone());
  kill(launcher.pid(), SIGINT);
  const LauncherResult result = launcher.wait(10s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGINT);
  CHECK(result.err.find("rank 1 (pid ") != std::string::npos);
  CHECK(result.err.find("received SIGINT; passing it on to 1 rank(s)") != std::string::npos);
  CHECK(result.err.find("restart") == std::string::npos);
  CHECK(pids.pids().size() == 2);
  check_none_left(pids.pids());
}

namespace {

// Each start of `sh -c` appends its time (seconds since the epoch) to this file, then exits 3.
class StartTimes {
 public:
  StartTimes() : path_("/tmp/acc_launch_starts_" + std::to_string(getpid())) { std::remove(path_.c_str()); }
  ~StartTimes() { std::remove(path_.c_str()); }
  StartTimes(const StartTimes&) = delete;
  StartTimes& operator=(const StartTimes&) = delete;

  std::vector<std::string> program() const { return {"sh", "-c", "date +%s.%N >> " + path_ + "; exit 3"}; }
  std::vector<double> times() const {
    std::vector<double> times;
    std::ifstream file(path_);
    for (double time; file >> time;) times.push_back(time);
    return times;
  }

 private:
  std::string path_;
};

std::vector<std::string> launch_with(std::vector<std::string> flags, const std::vector<std::string>& program) {
  flags.insert(flags.begin(), "launch");
  flags.insert(flags.end(), program.begin(), program.end());
  return flags;
}

}  // namespace

// A restarted start comes at least its delay after the previous one ended, which was after it
// recorded its time: each gap is at least the delay, however loaded the machine.
TEST_CASE("acc launch waits 1 s before the first restart and 2 s before the second by default") {
  const StartTimes starts;
  const LauncherResult result = run_acc(launch_with({"--max_restarts", "2"}, starts.program()), {}, 15s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 3);
  const std::vector<double> times = starts.times();
  REQUIRE(times.size() == 3);
  CHECK(times[1] - times[0] >= 1.0);
  CHECK(times[2] - times[1] >= 2.0);
  CHECK(result.err.find("acc launch: restart 1 of 2 in 1 s: starting the 1 local rank(s) again\n") !=
        std::string::npos);
  CHECK(result.err.find("acc launch: restart 2 of 2 in 2 s: starting the 1 local rank(s) again\n") !=
        std::string::npos);
}

TEST_CASE("--restart_delay sets the first pause and --max_restart_delay caps the doubling") {
  const StartTimes starts;
  const LauncherResult result = run_acc(
      launch_with({"--max_restarts", "4", "--restart_delay", "0.1", "--max_restart_delay", "0.25"}, starts.program()));
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 3);
  const std::vector<double> delays = {0.1, 0.2, 0.25, 0.25};
  const std::vector<double> times = starts.times();
  REQUIRE(times.size() == delays.size() + 1);
  for (std::size_t restart = 1; restart <= delays.size(); ++restart) {
    CAPTURE(restart);
    CHECK(times[restart] - times[restart - 1] >= delays[restart - 1]);
    char message[96];
    std::snprintf(message, sizeof message, "acc launch: restart %zu of 4 in %g s: starting", restart,
                  delays[restart - 1]);
    CHECK(result.err.find(message) != std::string::npos);
  }
}

TEST_CASE("SIGTERM during the pause before a restart ends acc launch at once, without the restart") {
  const StartTimes starts;
  Launcher launcher(launch_with({"--max_restarts", "3", "--restart_delay", "30"}, starts.program()));
  const auto deadline = Clock::now() + 5s;
  while (starts.times().empty() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  REQUIRE(starts.times().size() == 1);
  std::this_thread::sleep_for(200ms);  // the rank has exited: acc launch is in the pause, or about to be
  const auto signalled = Clock::now();
  kill(launcher.pid(), SIGTERM);
  const LauncherResult result = launcher.wait(10s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGTERM);
  CHECK(std::chrono::duration<double>(Clock::now() - signalled).count() < 2.0);
  CHECK(result.err.find("acc launch: received SIGTERM; not restarting\n") != std::string::npos);
  CHECK(starts.times().size() == 1);
}
