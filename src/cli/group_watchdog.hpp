// A process of its own that outlives a SIGKILLed acc launch. PR_SET_PDEATHSIG ends the ranks then,
// but not what they started; so the launcher tells the watchdog each rank's process group as it
// starts it and once it is empty, and when the launcher's end of the pipe closes with groups still
// listed (the launcher died, or gave up on stuck processes), the watchdog SIGKILLs them. It is
// named acc-watchdog (ps, top), and the launcher replaces it if it dies before the job ends.
#pragma once

#include <sys/types.h>

#include <vector>

namespace acc::cli {

class GroupWatchdog {
 public:
  GroupWatchdog() = default;
  ~GroupWatchdog() { finish(); }
  GroupWatchdog(const GroupWatchdog&) = delete;
  GroupWatchdog& operator=(const GroupWatchdog&) = delete;

  // Forks the watchdog; false (with errno set) when it cannot.
  bool start();
  // After the launcher reaped the watchdog (pid()), starts another and tells it every group still listed.
  bool replace();
  pid_t pid() const { return pid_; }

  void add(pid_t group);
  void remove(pid_t group);

  // The launcher's normal end: the watchdog finds no group left and exits before the launcher does
  // (or is SIGKILLed after a second if it does not, being stopped).
  void finish();

 private:
  void send(pid_t value);
  [[noreturn]] static void watch(int fd);

  std::vector<pid_t> groups_;  // what the watchdog was told, to tell a replacement
  pid_t pid_ = -1;
  int fd_ = -1;
};

}  // namespace acc::cli
