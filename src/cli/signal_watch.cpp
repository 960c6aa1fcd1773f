#include "signal_watch.hpp"

#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

namespace acc::cli {
namespace {

// The signals acc launch passes on to the ranks. One that the launcher was started with ignored
// (nohup ignores SIGHUP) stays ignored, by the launcher and by the ranks, which inherit that.
std::vector<int> signals_to_forward() {
  std::vector<int> forwarded;
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction current {};
    sigaction(signal, nullptr, &current);
    if (current.sa_handler != SIG_IGN) forwarded.push_back(signal);
  }
  return forwarded;
}

}  // namespace

std::string signal_name(int signal) {
  static const std::map<int, const char*> names = {
      {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"},
      {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"},
      {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"}, {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},
      {SIGXCPU, "SIGXCPU"}, {SIGTTIN, "SIGTTIN"}, {SIGTTOU, "SIGTTOU"},
  };
  const auto found = names.find(signal);
  return found != names.end() ? found->second : "signal " + std::to_string(signal);
}

SignalWatch::~SignalWatch() {
  if (fd_ >= 0) close(fd_);
}

std::optional<std::string> SignalWatch::start() {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigaction(SIGCHLD, &default_action, nullptr);  // an inherited SIG_IGN would make waitpid() blind

  sigset_t watched;
  sigemptyset(&watched);
  sigaddset(&watched, SIGCHLD);
  for (int signal : signals_to_forward()) sigaddset(&watched, signal);
  sigprocmask(SIG_BLOCK, &watched, &original_mask_);
  fd_ = signalfd(-1, &watched, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd_ < 0) return std::string("cannot watch for signals: ") + std::strerror(errno);
  // A reader of our output that goes away must not kill the launcher and leave the ranks alone.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &original_sigpipe_);
  return std::nullopt;
}

std::pair<std::optional<int>, bool> SignalWatch::read() {
  std::optional<int> to_forward;
  bool child_changed = false;
  signalfd_siginfo info;
  while (::read(fd_, &info, sizeof info) == sizeof info) {
    if (info.ssi_signo == SIGCHLD)
      child_changed = true;
    else if (!to_forward)
      to_forward = static_cast<int>(info.ssi_signo);
  }
  return {to_forward, child_changed};
}

}  // namespace acc::cli
