#include "rank_process.hpp"

#include "launch.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>

namespace acc::cli {

Pipe::~Pipe() {
  close_end(ends_[0]);
  close_end(ends_[1]);
}

bool Pipe::open() { return pipe2(ends_, O_CLOEXEC) == 0; }

void Pipe::close_end(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

void become_rank(const RankExec& exec) {
  // Its own process group, so that a signal to the group also reaches what the rank starts.
  setpgid(0, 0);
  // Dies with the launcher, even if the launcher is SIGKILLed; had it died already, stop here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != exec.launcher) _exit(kExitCannotExecute);
  sigprocmask(SIG_SETMASK, exec.signal_mask, nullptr);
  sigaction(SIGPIPE, exec.sigpipe, nullptr);
  if (exec.stdout_fd >= 0) dup2(exec.stdout_fd, STDOUT_FILENO);
  if (exec.stderr_fd >= 0) dup2(exec.stderr_fd, STDERR_FILENO);
  execvpe(exec.argv[0], exec.argv, exec.envp);
  const int error = errno;
  [[maybe_unused]] const ssize_t written = write(exec.exec_error_fd, &error, sizeof error);
  _exit(kExitCannotExecute);
}

}  // namespace acc::cli
