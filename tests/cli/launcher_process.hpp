// Runs the built `acc` binary as a child of the test, with its output captured and a time bound,
// and checks which processes of a job are still alive.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace acc::cli::test {

using Clock = std::chrono::steady_clock;

// The stand-in for a training program (launch_probe.cpp), found through PATH as a user's would be.
inline const std::string kProbe = "acc_launch_probe";

struct LauncherResult {
  bool finished_in_time = false;  // false: it was SIGKILLed at the time bound
  int exit_code = -1;             // 128 + signal when a signal ended it
  std::string out, err;
  double seconds = 0;  // from start to exit
};

// A fresh folder under the temporary directory, named after the test and this process, removed
// afterwards.
class TempFolder {
 public:
  explicit TempFolder(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / (name + "_" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempFolder() { std::filesystem::remove_all(path_); }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Where every process of a probe job writes its pid (ACC_PROBE_PID_FILE); removed afterwards, and
// any process it names that is still there is killed, so that a failing test leaves nothing behind.
class PidFile {
 public:
  PidFile();
  ~PidFile();
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<pid_t> pids() const;
  // Waits until at least `count` pids are recorded; false if that takes longer than `timeout`.
  bool wait_for(std::size_t count, std::chrono::duration<double> timeout) const;
  // "ACC_PROBE_PID_FILE=<path>", for the launcher's environment.
  std::string variable() const { return "ACC_PROBE_PID_FILE=" + path_; }

 private:
  std::string path_;
};

// Which of the launcher's streams the test never reads, standing for a reader that stopped (a
// stuck pager or log shipper): that pipe fills and stays full.
enum class Unread { none, stdout_pipe, stderr_pipe };

class Launcher {
 public:
  // Starts `acc arguments...` with the test's environment, less anything that would change what
  // acc launch passes to the ranks, plus `extra_environment` ("NAME=value") and the probe's folder
  // at the front of PATH.
  // `program`: the acc binary to run (a copy of it elsewhere, for acc test).
  explicit Launcher(const std::vector<std::string>& arguments, const std::vector<std::string>& extra_environment = {},
                    Unread unread = Unread::none, const std::string& program = ACC_BIN);
  ~Launcher();
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  pid_t pid() const { return pid_; }
  // Collects the output until the launcher exits, SIGKILLing it if it runs past `timeout`.
  LauncherResult wait(std::chrono::duration<double> timeout);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  Unread unread_;
  Clock::time_point start_;
};

LauncherResult run_acc(const std::vector<std::string>& arguments,
                       const std::vector<std::string>& extra_environment = {},
                       std::chrono::duration<double> timeout = std::chrono::seconds(10));

// run_acc with another copy of the acc binary.
LauncherResult run_program(const std::string& program, const std::vector<std::string>& arguments,
                           const std::vector<std::string>& extra_environment = {},
                           std::chrono::duration<double> timeout = std::chrono::seconds(10));

// kill(pid, 0) fails with ESRCH: not even a zombie is left.
bool is_gone(pid_t pid);
// CHECKs (doctest) that none of `pids` is left, not even as a zombie.
void check_none_left(const std::vector<pid_t>& pids);
// The processes whose parent is `parent`, zombies included (from /proc).
std::vector<pid_t> children_of(pid_t parent);
// Reaps the zombies this test process adopted (it is a child subreaper) and waits, at most
// `timeout`, until every pid is gone; returns the ones that are not.
std::vector<pid_t> survivors_after(const std::vector<pid_t>& pids, std::chrono::duration<double> timeout);

std::vector<std::string> lines_of(const std::string& text);

// The launch probe's `env` lines, by RANK: variable name -> value ("<unset>" when unset).
std::map<int, std::map<std::string, std::string>> environments_by_rank(const std::string& out);

}  // namespace acc::cli::test
