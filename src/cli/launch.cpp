#include "launch.hpp"

#include "line_forwarder.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

extern char** environ;

namespace acc::cli {
namespace {

using Clock = std::chrono::steady_clock;

// How long processes sent SIGKILL get to disappear. Only one stuck in the kernel (a hung driver or
// file system) takes longer, and then the launcher gives up on it rather than hang with it.
constexpr auto kKillWait = std::chrono::seconds(5);
constexpr int kExitLauncherError = 1;

void report(const std::string& message) { write_all(STDERR_FILENO, "acc launch: " + message + "\n"); }

std::string signal_name(int signal) {
  static const std::map<int, const char*> names = {
      {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
      {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
      {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
      {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"}, {SIGXCPU, "SIGXCPU"},
  };
  const auto found = names.find(signal);
  return found != names.end() ? found->second : "signal " + std::to_string(signal);
}

// The shell's convention, which torchrun and Python Accelerate follow too.
int exit_code_of(int wait_status) {
  return WIFSIGNALED(wait_status) ? 128 + WTERMSIG(wait_status) : WEXITSTATUS(wait_status);
}

std::string describe_exit(int wait_status) {
  if (WIFSIGNALED(wait_status)) return "was killed by signal " + signal_name(WTERMSIG(wait_status));
  return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
}

std::string format_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

// Lets the kernel choose a free port by binding to port 0 on `address`. Another process may take
// the port before rank 0 binds it; torchrun accepts the same small risk.
std::optional<int> pick_free_port(const std::string& address, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* candidates = nullptr;
  if (const int failure = getaddrinfo(address.c_str(), "0", &hints, &candidates)) {
    error = gai_strerror(failure);
    return std::nullopt;
  }
  const std::unique_ptr<addrinfo, void (*)(addrinfo*)> owner(candidates, freeaddrinfo);
  for (const addrinfo* candidate = candidates; candidate; candidate = candidate->ai_next) {
    const int socket_fd = socket(candidate->ai_family, candidate->ai_socktype | SOCK_CLOEXEC, candidate->ai_protocol);
    if (socket_fd < 0) continue;
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    const bool ok = bind(socket_fd, candidate->ai_addr, candidate->ai_addrlen) == 0 &&
                    getsockname(socket_fd, reinterpret_cast<sockaddr*>(&bound), &length) == 0;
    error = std::strerror(errno);
    close(socket_fd);
    if (!ok) continue;
    if (bound.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(bound).sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in&>(bound).sin_port);
  }
  return std::nullopt;
}

int usable_cpus() {
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) return CPU_COUNT(&cpus);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The launcher's own environment with the variables torchrun sets for one rank on top.
std::vector<std::string> rank_environment(const LaunchOptions& options, int port, int restart, int local_rank) {
  const int local_world_size = options.processes_per_machine();
  std::map<std::string, std::string> job = {
      {"RANK", std::to_string(options.machine_rank * local_world_size + local_rank)},
      {"WORLD_SIZE", std::to_string(options.num_processes)},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(local_world_size)},
      {"GROUP_RANK", std::to_string(options.machine_rank)},
      {"GROUP_WORLD_SIZE", std::to_string(options.num_machines)},
      {"MASTER_ADDR", options.main_process_ip},
      {"MASTER_PORT", std::to_string(port)},
      {"ACC_RDZV_TIMEOUT", std::to_string(options.rdzv_timeout_seconds)},
      {"ACC_DISTRIBUTED_TYPE", options.distributed_type},
      // torchrun's names, so that a program written for it knows that it should resume.
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(restart)},
      {"TORCHELASTIC_MAX_RESTARTS", std::to_string(options.max_restarts)},
  };
  if (options.config_file) job["ACC_CONFIG_FILE"] = *options.config_file;
  if (options.cpu) job["ACCELERATE_USE_CPU"] = "true";
  if (options.mixed_precision) job["ACCELERATE_MIXED_PRECISION"] = *options.mixed_precision;
  if (options.gpu_ids && *options.gpu_ids != "all") job["CUDA_VISIBLE_DEVICES"] = *options.gpu_ids;
  // As torchrun does: ranks sharing this machine's CPUs each take their share of the threads,
  // rather than every rank starting one thread per CPU.
  if (local_world_size > 1 && !std::getenv("OMP_NUM_THREADS"))
    job["OMP_NUM_THREADS"] = std::to_string(std::max(1, usable_cpus() / local_world_size));

  std::vector<std::string> environment;
  for (char** entry = environ; *entry; ++entry) {
    const std::string_view text(*entry);
    if (!job.count(std::string(text.substr(0, text.find('='))))) environment.emplace_back(text);
  }
  for (const auto& [name, value] : job) environment.push_back(name + "=" + value);
  return environment;
}

std::vector<char*> null_terminated(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& text : strings) pointers.push_back(text.data());
  pointers.push_back(nullptr);
  return pointers;
}

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

[[noreturn]] void become_rank(const RankExec& exec) {
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

// A pipe whose ends are closed on exec (unless dup2'd onto stdout/stderr) and by its destructor.
class Pipe {
 public:
  Pipe() = default;
  ~Pipe() {
    close_end(ends_[0]);
    close_end(ends_[1]);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  bool open() { return pipe2(ends_, O_CLOEXEC) == 0; }
  int read_end() const { return ends_[0]; }
  int write_end() const { return ends_[1]; }
  int release_read_end() { return std::exchange(ends_[0], -1); }
  void close_write_end() { close_end(ends_[1]); }

 private:
  static void close_end(int& fd) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  int ends_[2] = {-1, -1};
};

// A process of its own that outlives a SIGKILLed launcher. PR_SET_PDEATHSIG ends the ranks then,
// but not what they started; so the launcher tells the watchdog each rank's process group as it
// starts it and once it is empty, and when the launcher's end of the pipe closes with groups still
// listed (the launcher died, or gave up on stuck processes), the watchdog SIGKILLs them.
class GroupWatchdog {
 public:
  GroupWatchdog() = default;
  ~GroupWatchdog() { finish(); }
  GroupWatchdog(const GroupWatchdog&) = delete;
  GroupWatchdog& operator=(const GroupWatchdog&) = delete;

  bool start() {
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

  void add(pid_t group) { send(group); }
  void remove(pid_t group) { send(-group); }

  // The launcher's normal end: the watchdog finds no group left and exits before the launcher does.
  void finish() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  // One write of less than PIPE_BUF bytes: never interleaved, never partial.
  void send(pid_t value) {
    if (fd_ >= 0) [[maybe_unused]]
      const ssize_t written = write(fd_, &value, sizeof value);
  }

  [[noreturn]] static void watch(int fd) {
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

  pid_t pid_ = -1;
  int fd_ = -1;
};

// The signals the launcher watches (SIGCHLD and those it forwards), read from a signalfd in the
// poll loop rather than handled asynchronously. Set up once for all the starts of the local group.
class SignalWatch {
 public:
  SignalWatch() = default;
  ~SignalWatch() {
    if (fd_ >= 0) close(fd_);
  }
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

  bool start() {
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &default_action, nullptr);  // an inherited SIG_IGN would make waitpid() blind

    sigset_t watched;
    sigemptyset(&watched);
    sigaddset(&watched, SIGCHLD);
    for (int signal : signals_to_forward()) sigaddset(&watched, signal);
    sigprocmask(SIG_BLOCK, &watched, &original_mask_);
    fd_ = signalfd(-1, &watched, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd_ < 0) {
      report(std::string("cannot watch for signals: ") + std::strerror(errno));
      return false;
    }
    // A reader of our output that goes away must not kill the launcher and leave the ranks alone.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &original_sigpipe_);
    return true;
  }

  int fd() const { return fd_; }
  // What a rank starts with: the launcher's mask and SIGPIPE action from before start().
  const sigset_t& original_mask() const { return original_mask_; }
  const struct sigaction& original_sigpipe() const { return original_sigpipe_; }

  // Reads what has arrived: returns the first signal to forward (if any) and whether a child changed.
  std::pair<std::optional<int>, bool> read() {
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

 private:
  int fd_ = -1;
  sigset_t original_mask_{};
  struct sigaction original_sigpipe_ {};
};

// One start of the local group: its ranks, supervised until all of them are gone.
class Job {
 public:
  // `restart`: how many times the group was started before (TORCHELASTIC_RESTART_COUNT).
  Job(const LaunchOptions& options, int port, int restart, SignalWatch& signals, GroupWatchdog& watchdog)
      : options_(options), port_(port), restart_(restart), signals_(signals), watchdog_(watchdog) {}
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  struct Outcome {
    int exit_code;
    bool may_restart;  // a rank failed, and every process of the group is gone
  };

  Outcome run() {
    start_ranks();
    supervise();
    for (Rank& rank : ranks_) {
      if (rank.stdout_forwarder) rank.stdout_forwarder->finish();
      if (rank.stderr_forwarder) rank.stderr_forwarder->finish();
    }
    return {exit_code_.value_or(0), rank_failed_ && ranks_with_processes() == 0};
  }

 private:
  struct Rank {
    Rank(int rank, pid_t pid) : rank(rank), pid(pid) {}
    int rank;
    pid_t pid;                // also its process group's id
    bool running = true;      // not reaped yet
    bool group_gone = false;  // its process group is empty, so the id may belong to someone else
    std::unique_ptr<LineForwarder> stdout_forwarder, stderr_forwarder;
  };

  void start_ranks() {
    const int local_world_size = options_.processes_per_machine();
    ranks_.reserve(static_cast<std::size_t>(local_world_size));
    for (int local_rank = 0; local_rank < local_world_size && !exit_code_; ++local_rank) start_rank(local_rank);
  }

  // Starts one rank and waits until its exec() has succeeded or failed, so that a program that
  // cannot run is reported once, by name, before more ranks are started.
  void start_rank(int local_rank) {
    std::vector<std::string> arguments = options_.program_and_arguments;
    std::vector<std::string> environment = rank_environment(options_, port_, restart_, local_rank);
    std::vector<char*> argv = null_terminated(arguments);
    std::vector<char*> envp = null_terminated(environment);
    Pipe exec_error, out, err;
    if (!exec_error.open() || (options_.tee && (!out.open() || !err.open()))) return fail_to_start("pipe", errno);

    const RankExec exec{argv.data(),
                        envp.data(),
                        getpid(),
                        &signals_.original_mask(),
                        &signals_.original_sigpipe(),
                        out.write_end(),
                        err.write_end(),
                        exec_error.write_end()};
    const pid_t pid = fork();
    if (pid == 0) become_rank(exec);
    const int fork_errno = errno;
    for (Pipe* each : {&exec_error, &out, &err}) each->close_write_end();
    if (pid < 0) return fail_to_start("fork", fork_errno);
    setpgid(pid, pid);  // as the child does, so that no signal from us can come before it
    watchdog_.add(pid);

    Rank& rank = ranks_.emplace_back(options_.machine_rank * options_.processes_per_machine() + local_rank, pid);
    if (options_.tee) {
      const std::string prefix = "[rank " + std::to_string(rank.rank) + "] ";
      rank.stdout_forwarder = std::make_unique<LineForwarder>(out.release_read_end(), STDOUT_FILENO, prefix);
      rank.stderr_forwarder = std::make_unique<LineForwarder>(err.release_read_end(), STDERR_FILENO, prefix);
    }

    int exec_errno = 0;
    ssize_t received;
    do received = read(exec_error.read_end(), &exec_errno, sizeof exec_errno);
    while (received < 0 && errno == EINTR);
    if (received <= 0) return;  // exec succeeded and closed the pipe

    const std::string& program = options_.program_and_arguments.front();
    const bool searched_path = program.find('/') == std::string::npos;
    report("cannot run '" + program +
           "': " + (exec_errno == ENOENT && searched_path ? "not found in PATH" : std::strerror(exec_errno)));
    stop(kExitCannotExecute, SIGTERM);
  }

  void fail_to_start(const char* what, int error) {
    report(std::string("cannot start a rank: ") + what + "() failed: " + std::strerror(error));
    stop(kExitLauncherError, SIGTERM);
  }

  void supervise() {
    while (true) {
      forget_empty_groups();
      if (running_ranks() == 0 && ranks_with_processes() == 0) return;
      if (running_ranks() == 0 && !kill_at_) {
        report("all ranks have exited, but processes they started still run in the process groups of " +
               std::to_string(ranks_with_processes()) + " rank(s); stopping them");
        stop(0, SIGTERM);
      }

      const auto deadline = killed_ ? give_up_at_ : kill_at_;
      if (deadline && Clock::now() >= *deadline) {
        if (killed_) {
          report("processes of " + std::to_string(ranks_with_processes()) + " rank(s) are still there " +
                 format_seconds(std::chrono::duration<double>(kKillWait).count()) +
                 " after SIGKILL (stuck in the kernel?); exiting without them");
          return;
        }
        report("processes of " + std::to_string(ranks_with_processes()) + " rank(s) still run " +
               format_seconds(options_.grace_period_seconds) + " after " + signal_name(stop_signal_) +
               "; sending SIGKILL");
        signal_ranks(SIGKILL);
        killed_ = true;
        give_up_at_ = Clock::now() + kKillWait;
        continue;
      }
      wait_for_events(deadline);
    }
  }

  void wait_for_events(std::optional<Clock::time_point> deadline) {
    std::vector<pollfd> watched{{signals_.fd(), POLLIN, 0}};
    std::vector<LineForwarder*> forwarders;
    for (Rank& rank : ranks_)
      for (LineForwarder* forwarder : {rank.stdout_forwarder.get(), rank.stderr_forwarder.get()})
        if (forwarder && forwarder->is_open()) {
          watched.push_back({forwarder->source(), POLLIN, 0});
          forwarders.push_back(forwarder);
        }

    int timeout_ms = -1;
    if (deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
    }
    if (poll(watched.data(), watched.size(), timeout_ms) <= 0) return;

    for (std::size_t i = 1; i < watched.size(); ++i)
      if (watched[i].revents) forwarders[i - 1]->forward_available();
    if (watched[0].revents) read_signals();
  }

  void read_signals() {
    const auto [to_forward, child_changed] = signals_.read();
    if (to_forward) forward_signal(*to_forward);
    if (child_changed) reap_children();
  }

  void reap_children() {
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      const auto rank = std::find_if(ranks_.begin(), ranks_.end(), [&](const Rank& r) { return r.pid == pid; });
      if (rank == ranks_.end()) continue;  // an orphan the launcher adopted: reaping it is all it needs
      rank->running = false;
      const bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (!failed || exit_code_) continue;  // ranks that end while the job stops are expected to
      const int others = running_ranks();
      report("rank " + std::to_string(rank->rank) + " (pid " + std::to_string(pid) + ") " + describe_exit(status) +
             (others > 0 ? "; stopping the other " + std::to_string(others) + " rank(s)" : ""));
      stop(exit_code_of(status), SIGTERM);
      rank_failed_ = true;
    }
  }

  void forward_signal(int signal) {
    report("received " + signal_name(signal) + "; passing it on to " + std::to_string(running_ranks()) + " rank(s)");
    stop(128 + signal, signal);
  }

  // Sends `signal` to every rank's process group and starts the grace period. The first reason to
  // stop decides the exit code.
  void stop(int exit_code, int signal) {
    if (!exit_code_ && exit_code != 0) exit_code_ = exit_code;
    signal_ranks(signal);
    if (!kill_at_) {
      stop_signal_ = signal;
      kill_at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(options_.grace_period_seconds));
    }
  }

  void signal_ranks(int signal) {
    for (Rank& rank : ranks_) {
      if (rank.group_gone) continue;
      // A rank that moved itself to another group or session is still reached through its pid,
      // which stays ours until it is reaped.
      if (kill(-rank.pid, signal) != 0 && rank.running) kill(rank.pid, signal);
    }
    forget_empty_groups();
  }

  // Once a reaped rank's group is empty its id may be reused by an unrelated process, so it must
  // never be signalled again. (EPERM also counts: nothing the launcher started can be reached.)
  void forget_empty_groups() {
    for (Rank& rank : ranks_)
      if (!rank.running && !rank.group_gone && kill(-rank.pid, 0) != 0) {
        rank.group_gone = true;
        watchdog_.remove(rank.pid);
      }
  }

  int running_ranks() const {
    return static_cast<int>(std::count_if(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; }));
  }
  int ranks_with_processes() const {
    return static_cast<int>(std::count_if(ranks_.begin(), ranks_.end(), [](const Rank& r) { return !r.group_gone; }));
  }

  const LaunchOptions& options_;
  const int port_;
  const int restart_;
  SignalWatch& signals_;
  GroupWatchdog& watchdog_;
  std::vector<Rank> ranks_;
  std::optional<int> exit_code_;                 // set by the first failure or signal
  bool rank_failed_ = false;                     // the first failure was a rank's (not a signal, not exec)
  int stop_signal_ = SIGTERM;                    // what the ranks were asked to stop with
  std::optional<Clock::time_point> kill_at_;     // end of the grace period, once stopping
  bool killed_ = false;                          // SIGKILL sent
  std::optional<Clock::time_point> give_up_at_;  // when to stop waiting for SIGKILLed processes
};

// The rendezvous port of one start: --main_process_port, or a free one. A restart on a single
// machine takes a fresh one, so that nothing of the previous start (a connection in TIME_WAIT, a
// late rank) meets the new rendezvous; across machines the port must stay what the others know.
std::optional<int> rendezvous_port(const LaunchOptions& options, std::optional<int> previous) {
  if (options.main_process_port != 0) return options.main_process_port;
  if (previous && options.num_machines > 1) return previous;
  std::string error;
  const auto picked = pick_free_port(options.main_process_ip, error);
  if (!picked) {
    report("--main_process_port 0: cannot pick a free port on " + options.main_process_ip + ": " + error);
    return std::nullopt;
  }
  if (options.num_machines > 1)
    report("picked --main_process_port " + std::to_string(*picked) + "; pass the same to the other machines");
  return picked;
}

}  // namespace

int run_launch(const LaunchOptions& options) {
  SignalWatch signals;
  if (!signals.start()) return kExitLauncherError;
  // Orphans of the ranks become the launcher's children, so it can reap them and none is left as
  // a zombie under an init that does not reap.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  GroupWatchdog watchdog;
  if (!watchdog.start()) {
    report(std::string("cannot start the watchdog process: ") + std::strerror(errno));
    return kExitLauncherError;
  }
  std::optional<int> port;
  for (int restart = 0;; ++restart) {
    port = rendezvous_port(options, port);
    if (!port) return restart == 0 ? kExitUsage : kExitLauncherError;
    const Job::Outcome outcome = Job(options, *port, restart, signals, watchdog).run();
    if (outcome.exit_code == 0 || !outcome.may_restart) return outcome.exit_code;
    if (restart == options.max_restarts) {
      if (options.max_restarts > 0)
        report("no restart left (--max_restarts " + std::to_string(options.max_restarts) + "); exiting with code " +
               std::to_string(outcome.exit_code));
      return outcome.exit_code;
    }
    // A signal that came while the group was stopping ends the job rather than restart it.
    if (const auto signal = signals.read().first) {
      report("received " + signal_name(*signal) + "; not restarting");
      return 128 + *signal;
    }
    report("restart " + std::to_string(restart + 1) + " of " + std::to_string(options.max_restarts) +
           ": starting the " + std::to_string(options.processes_per_machine()) + " local rank(s) again");
  }
}

int launch_command(const std::vector<std::string>& arguments) {
  const LaunchParse parsed = parse_launch_arguments(arguments, count_nvidia_gpus());
  if (std::holds_alternative<HelpRequested>(parsed)) {
    write_all(STDOUT_FILENO, launch_usage());
    return 0;
  }
  if (const auto* error = std::get_if<UsageError>(&parsed)) {
    report(error->message);
    return kExitUsage;
  }
  return run_launch(std::get<LaunchOptions>(parsed));
}

}  // namespace acc::cli
