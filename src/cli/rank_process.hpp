// The fork/exec side of starting a rank: the pipes between it and acc launch, and what the forked
// child does before it becomes the program.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <utility>

namespace acc::cli {

// A pipe whose ends are closed on exec (unless dup2'd onto stdout/stderr) and by its destructor.
class Pipe {
 public:
  Pipe() = default;
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  bool open();
  int read_end() const { return ends_[0]; }
  int write_end() const { return ends_[1]; }
  int release_read_end() { return std::exchange(ends_[0], -1); }
  void close_write_end() { close_end(ends_[1]); }

 private:
  static void close_end(int& fd);
  int ends_[2] = {-1, -1};
};

// Everything a forked child needs to become a rank, prepared before fork().
struct RankExec {
  char** argv;
  char** envp;
  pid_t launcher;
  const sigset_t* signal_mask;         // the launcher's mask before it blocked the signals it watches
  const struct sigaction* sigpipe;     // what SIGPIPE did before the launcher ignored it
  int stdout_fd = -1, stderr_fd = -1;  // with --tee, the write ends of the pipes to the launcher
  int exec_error_fd;                   // closed by a successful exec; else receives errno
};

// In the forked child: its own process group, death with the launcher, the launcher's original
// signal state, then exec; exits with kExitCannotExecute (after sending errno) if exec fails.
[[noreturn]] void become_rank(const RankExec& exec);

}  // namespace acc::cli
