// The signals acc launch watches (SIGCHLD and those it passes on to the ranks), read from a
// signalfd in its poll loop rather than handled asynchronously.
#pragma once

#include <signal.h>

#include <optional>
#include <string>
#include <utility>

namespace acc::cli {

// "SIGTERM" for SIGTERM; "signal N" for one without a common name.
std::string signal_name(int signal);

class SignalWatch {
 public:
  SignalWatch() = default;
  ~SignalWatch();
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

  // Blocks the watched signals and opens the signalfd; on failure returns the reason.
  std::optional<std::string> start();

  int fd() const { return fd_; }
  // What a rank starts with: the launcher's mask and SIGPIPE action from before start().
  const sigset_t& original_mask() const { return original_mask_; }
  const struct sigaction& original_sigpipe() const { return original_sigpipe_; }

  // Reads what has arrived: returns the first signal to forward (if any) and whether a child changed.
  std::pair<std::optional<int>, bool> read();

 private:
  int fd_ = -1;
  sigset_t original_mask_{};
  struct sigaction original_sigpipe_ {};
};

}  // namespace acc::cli
