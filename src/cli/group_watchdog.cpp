#include "group_watchdog.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

namespace acc::cli {
namespace {

// How long the watchdog gets to exit at the launcher's normal end; it needs milliseconds.
constexpr auto kExitWait = std::chrono::seconds(1);

}  // namespace

bool GroupWatchdog::start() {
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) return false;
  const pid_t pid = fork();
  if (pid == 0) {
    close(ends[1]);
    watch(ends[0]);
  }
  close(ends[0]);
  if (pid < 0) {
    close(ends[1]);
    return false;
  }
  pid_ = pid;
  fd_ = ends[1];
  return true;
}

bool GroupWatchdog::replace() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  pid_ = -1;
  if (!start()) return false;
  for (pid_t group : groups_) send(group);
  return true;
}

void GroupWatchdog::add(pid_t group) {
  groups_.push_back(group);
  send(group);
}

void GroupWatchdog::remove(pid_t group) {
  groups_.erase(std::remove(groups_.begin(), groups_.end(), group), groups_.end());
  send(-group);
}

void GroupWatchdog::finish() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (pid_ <= 0) return;
  // It exits as soon as it reads the end of the pipe; one that cannot (stopped with SIGSTOP) must
  // not keep the launcher from exiting.
  const auto give_up_at = std::chrono::steady_clock::now() + kExitWait;
  while (waitpid(pid_, nullptr, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > give_up_at) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
}

// One write of less than PIPE_BUF bytes: never interleaved, never partial.
void GroupWatchdog::send(pid_t value) {
  if (fd_ >= 0) [[maybe_unused]]
    const ssize_t written = write(fd_, &value, sizeof value);
}

void GroupWatchdog::watch(int fd) {
  prctl(PR_SET_NAME, "acc-watchdog");
  // Nothing to print, and the launcher's output must close when the launcher and ranks are gone.
  const int null = open("/dev/null", O_RDWR);
  for (int standard : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) dup2(null, standard);
  std::vector<pid_t> groups;
  pid_t value;
  ssize_t received;
  while ((received = read(fd, &value, sizeof value)) == sizeof value || (received < 0 && errno == EINTR)) {
    if (received < 0) continue;
    if (value > 0)
      groups.push_back(value);
    else
      groups.erase(std::remove(groups.begin(), groups.end(), -value), groups.end());
  }
  for (pid_t group : groups) kill(-group, SIGKILL);
  _exit(0);
}

}  // namespace acc::cli
