// acc launch supervises its ranks: a failure or a signal ends the whole job promptly, with nothing
// left behind, even when acc launch itself or its watchdog is killed.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;

TEST_CASE("a rank that exits 3 stops the job within seconds with exit code 3 and nothing left") {
  PidFile pids;
  // Each of the 3 ranks records its pid and its child's; rank 1 fails once all 6 are recorded.
  const LauncherResult result = run_acc({"launch", "--cpu", "--num_processes", "3", kProbe, "spawn-child",
                                         "wait-for-pids", "6", "exit-on-rank", "1", "3", "sleep", "60"},
                                        {pids.variable()});
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
                                        {pids.variable()});
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
                      {pids.variable()});
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
                    {pids.variable()});
  REQUIRE(pids.wait_for(4, 5s));
  kill(launcher.pid(), SIGKILL);
  const LauncherResult result = launcher.wait(5s);
  CHECK(result.exit_code == 128 + SIGKILL);
  const std::vector<pid_t> survivors = survivors_after(pids.pids(), 2s);
  CHECK(survivors.empty());
}

TEST_CASE("processes a successful rank leaves behind are stopped too") {
  PidFile pids;
  const LauncherResult result =
      run_acc({"launch", "--num_processes", "2", kProbe, "spawn-child", "wait-for-pids", "4"}, {pids.variable()});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.err.find("processes they started still run") != std::string::npos);
  REQUIRE(pids.pids().size() == 4);
  check_none_left(pids.pids());
}

namespace {

// The launcher's one child that is not the job's (its watchdog), other than `previous`; waits at
// most `timeout` for it to appear.
pid_t watchdog_of(const Launcher& launcher, const std::vector<pid_t>& job, pid_t previous = 0,
                  std::chrono::duration<double> timeout = 0s) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    std::vector<pid_t> others;
    for (pid_t child : children_of(launcher.pid()))
      if (std::count(job.begin(), job.end(), child) == 0 && child != previous) others.push_back(child);
    if (!others.empty() || Clock::now() > deadline) {
      REQUIRE(others.size() == 1);
      return others.front();
    }
    std::this_thread::sleep_for(10ms);
  }
}

}  // namespace

TEST_CASE("a killed watchdog is replaced, so that the ranks' children still die with a SIGKILLed acc launch") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "2", kProbe, "spawn-child", "sleep", "60"},
                    {pids.variable()});
  REQUIRE(pids.wait_for(4, 5s));
  const std::vector<pid_t> job = pids.pids();
  const pid_t first = watchdog_of(launcher, job);
  kill(first, SIGKILL);
  watchdog_of(launcher, job, first, 5s);  // the replacement

  kill(launcher.pid(), SIGKILL);
  CHECK(launcher.wait(5s).exit_code == 128 + SIGKILL);
  CHECK(survivors_after(job, 2s).empty());
}

TEST_CASE("acc launch says that its watchdog died and which one replaced it") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "1", kProbe, "sleep", "60"}, {pids.variable()});
  REQUIRE(pids.wait_for(1, 5s));
  const pid_t first = watchdog_of(launcher, pids.pids());
  kill(first, SIGKILL);
  const pid_t second = watchdog_of(launcher, pids.pids(), first, 5s);
  kill(launcher.pid(), SIGTERM);
  const LauncherResult result = launcher.wait(5s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGTERM);
  CHECK(result.err.find("acc launch: the watchdog process (pid " + std::to_string(first) +
                        ") was killed by signal SIGKILL; started a new one (pid " + std::to_string(second) + ")\n") !=
        std::string::npos);
  check_none_left(pids.pids());
}

TEST_CASE("a stopped watchdog does not keep acc launch from exiting when the job ends") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "1", kProbe, "sleep", "0.5"}, {pids.variable()});
  REQUIRE(pids.wait_for(1, 5s));
  const pid_t watchdog = watchdog_of(launcher, pids.pids());
  kill(watchdog, SIGSTOP);
  const LauncherResult result = launcher.wait(10s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  CHECK(result.seconds < 3.0);  // the job's 0.5 s, and at most 1 s for the watchdog to exit
  CHECK(survivors_after({watchdog}, 1s).empty());
}

namespace {

// Runs acc with `arguments` as a shell runs a job in the foreground: the leader of a new session
// whose controlling terminal, a new pseudo-terminal, is its standard input; its standard output
// and error go to `output`. Its wait status, or none (acc launch SIGKILLed, which its watchdog
// passes on to the ranks) after `timeout`.
std::optional<int> run_on_controlling_terminal(const std::vector<std::string>& arguments, const std::string& output,
                                               std::chrono::seconds timeout) {
  const int controller = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(controller >= 0);
  REQUIRE(grantpt(controller) == 0);
  REQUIRE(unlockpt(controller) == 0);
  const std::string terminal = ptsname(controller);
  std::vector<std::string> strings = {ACC_BIN};
  strings.insert(strings.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& text : strings) argv.push_back(text.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // only async-signal-safe calls until exec
    setsid();
    const int tty = open(terminal.c_str(), O_RDWR);  // a session leader's first terminal: its controlling one
    const int out = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (tty < 0 || out < 0 || dup2(tty, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
        dup2(out, STDERR_FILENO) < 0)
      _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  std::optional<int> status;
  const auto deadline = Clock::now() + timeout;
  for (int got = 0; !status && Clock::now() < deadline; std::this_thread::sleep_for(20ms))
    if (waitpid(pid, &got, WNOHANG) == pid) status = got;
  if (!status) {
    kill(pid, SIGKILL);
    int ignored = 0;
    waitpid(pid, &ignored, 0);
  }
  close(controller);  // after the session's end: closed earlier, it would hang the session up
  return status;
}

}  // namespace

// Found: the rank stopped (a background process group reading its terminal), and acc launch
// waited for it for ever, saying nothing.
TEST_CASE("a rank that reads acc launch's terminal stops the job, naming the rank and the fix") {
  TempFolder temp{"acc_launch_terminal"};
  const std::string output = (temp.path() / "output").string();
  const auto status =
      run_on_controlling_terminal({"launch", "--num_processes", "1", "sh", "-c", "read line"}, output, 20s);
  std::ifstream file(output);
  const std::string printed{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  CAPTURE(printed);
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 128 + SIGTTIN);
  CHECK(printed.find("acc launch: rank 0 (pid ") != std::string::npos);
  CHECK(printed.find(") was stopped by SIGTTIN: it read from the terminal, which ranks cannot") != std::string::npos);
}
