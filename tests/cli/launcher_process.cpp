#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace acc::cli::test {
namespace {

// Variables that acc launch sets or reads for the ranks: the tests decide them explicitly.
bool is_job_variable(const std::string& entry) {
  const std::string name = entry.substr(0, entry.find('='));
  // Python Accelerate's settings (ACCELERATE_DEBUG_MODE, ACCELERATE_GRADIENT_ACCUMULATION_STEPS, ...).
  if (name.rfind("ACCELERATE_", 0) == 0) return true;
  for (const char* job_variable :
       {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "MASTER_ADDR",
        "MASTER_PORT", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION", "CUDA_VISIBLE_DEVICES", "ACC_RDZV_TIMEOUT",
        "OMP_NUM_THREADS", "ACC_PROBE_PID_FILE", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
        "ACC_CONFIG_FILE", "PATH"})
    if (name == job_variable) return true;
  return false;
}

std::string folder_of(const std::string& path) { return path.substr(0, path.rfind('/')); }

void read_into(int& fd, std::string& text) {
  char buffer[4096];
  const ssize_t count = read(fd, buffer, sizeof buffer);
  if (count > 0) {
    text.append(buffer, static_cast<std::size_t>(count));
  } else if (count == 0 || errno != EINTR) {
    close(fd);
    fd = -1;
  }
}

}  // namespace

PidFile::PidFile() {
  char path[] = "/tmp/acc_launch_pids_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  close(fd);
  path_ = path;
}

PidFile::~PidFile() {
  for (pid_t pid : pids())
    if (!is_gone(pid)) kill(pid, SIGKILL);
  unlink(path_.c_str());
}

std::vector<pid_t> PidFile::pids() const {
  std::vector<pid_t> pids;
  std::ifstream file(path_);
  for (pid_t pid; file >> pid;) pids.push_back(pid);
  return pids;
}

bool PidFile::wait_for(std::size_t count, std::chrono::duration<double> timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (pids().size() < count) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

Launcher::Launcher(const std::vector<std::string>& arguments, const std::vector<std::string>& extra_environment,
                   Unread unread, const std::string& program)
    : unread_(unread) {
  std::vector<std::string> environment;
  for (char** entry = environ; *entry; ++entry)
    if (!is_job_variable(*entry)) environment.emplace_back(*entry);
  const char* path = std::getenv("PATH");
  environment.push_back("PATH=" + folder_of(PROBE_BIN) + ":" + (path ? path : "/usr/bin:/bin"));
  environment.insert(environment.end(), extra_environment.begin(), extra_environment.end());

  std::vector<std::string> argv_strings{program};
  argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv, envp;
  for (std::string& text : argv_strings) argv.push_back(text.data());
  for (std::string& text : environment) envp.push_back(text.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);

  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  // Whatever the test runner was started with (a background job ignores SIGINT), the launcher
  // starts with the signals it forwards in their default state and none blocked.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t forwarded, none;
  sigemptyset(&forwarded);
  sigemptyset(&none);
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&forwarded, signal);
  posix_spawnattr_setsigdefault(&attributes, &forwarded);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  start_ = Clock::now();
  const int failure = posix_spawn(&pid_, program.c_str(), &actions, &attributes, argv.data(), envp.data());
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  if (failure != 0) throw std::runtime_error("cannot start " + program);
}

Launcher::~Launcher() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  for (int fd : {out_fd_, err_fd_})
    if (fd >= 0) close(fd);
}

LauncherResult Launcher::wait(std::chrono::duration<double> timeout) {
  LauncherResult result;
  auto deadline = start_ + std::chrono::duration_cast<Clock::duration>(timeout);
  int status = 0;
  // The output ends when the launcher and every rank have closed it; its exit is checked between
  // reads, every few milliseconds, as a child's exit cannot be polled for directly here.
  const auto read_out = [&] { return unread_ == Unread::stdout_pipe ? -1 : out_fd_; };
  const auto read_err = [&] { return unread_ == Unread::stderr_pipe ? -1 : err_fd_; };
  while (pid_ > 0 || read_out() >= 0 || read_err() >= 0) {
    if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
      result.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
      pid_ = -1;
      // What is still in the pipes is there now; only a process left behind keeps them open longer.
      deadline = std::min(deadline, Clock::now() + std::chrono::seconds(1));
    }
    const bool past_deadline = Clock::now() > deadline;
    if (past_deadline && pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      result.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
      pid_ = -1;
      return result;  // finished_in_time stays false
    }
    if (past_deadline) break;  // exited, but something it started still holds its output
    pollfd fds[] = {{read_out(), POLLIN, 0}, {read_err(), POLLIN, 0}};
    if (poll(fds, 2, 5) > 0) {
      if (fds[0].revents) read_into(out_fd_, result.out);
      if (fds[1].revents) read_into(err_fd_, result.err);
    }
  }
  result.finished_in_time = true;
  result.exit_code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  return result;
}

LauncherResult run_acc(const std::vector<std::string>& arguments, const std::vector<std::string>& extra_environment,
                       std::chrono::duration<double> timeout) {
  return Launcher(arguments, extra_environment).wait(timeout);
}

LauncherResult run_program(const std::string& program, const std::vector<std::string>& arguments,
                           const std::vector<std::string>& extra_environment, std::chrono::duration<double> timeout) {
  return Launcher(arguments, extra_environment, Unread::none, program).wait(timeout);
}

bool is_gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

void check_none_left(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    CAPTURE(pid);
    CHECK(is_gone(pid));
  }
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> children;
  const std::unique_ptr<DIR, int (*)(DIR*)> proc(opendir("/proc"), closedir);
  while (const dirent* entry = proc ? readdir(proc.get()) : nullptr) {
    const std::string name = entry->d_name;
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    std::ifstream stat_file("/proc/" + name + "/stat");
    std::string stat;
    std::getline(stat_file, stat);
    const std::size_t comm_end = stat.rfind(')');
    if (comm_end == std::string::npos) continue;
    std::istringstream rest(stat.substr(comm_end + 1));
    std::string state;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == parent) children.push_back(std::stoi(name));
  }
  return children;
}

std::vector<pid_t> survivors_after(const std::vector<pid_t>& pids, std::chrono::duration<double> timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::vector<pid_t> survivors;
    for (pid_t pid : pids)
      if (!is_gone(pid)) survivors.push_back(pid);
    if (survivors.empty() || Clock::now() > deadline) return survivors;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  return lines;
}

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

}  // namespace acc::cli::test
