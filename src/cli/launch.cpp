#include "launch.hpp"

#include "group_watchdog.hpp"
#include "line_forwarder.hpp"
#include "output_stream.hpp"
#include "rank_environment.hpp"
#include "rank_logs.hpp"
#include "rank_process.hpp"
#include "signal_watch.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

extern char** environ;

namespace acc::cli {
namespace {

using Clock = std::chrono::steady_clock;

// How long processes sent SIGKILL get to disappear. Only one stuck in the kernel (a hung driver or
// file system) takes longer, and then the launcher gives up on it rather than hang with it.
constexpr auto kKillWait = std::chrono::seconds(5);
// How long acc launch, once its ranks are gone, waits for a reader of its output that takes nothing.
constexpr auto kOutputPatience = std::chrono::seconds(2);
constexpr int kExitLauncherError = 1;

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

// For poll(): from now until `deadline`, rounded up, 0 once past it.
int milliseconds_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
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

// What every start of the local group shares: the flags, the machine, and the launcher's own
// signal watch, watchdog and output.
struct Supervision {
  const LaunchOptions& options;
  const Machine& machine;
  SignalWatch& signals;
  GroupWatchdog& watchdog;
  OutputStream& out;
  OutputStream& err;
  RankLogs* logs;  // --log_dir's files, else null

  void report(const std::string& message) { err.write("acc launch: " + message + "\n"); }

  // Reaps a child that is not a rank: an orphan the launcher adopted (reaping it is all it needs),
  // or the watchdog, which is replaced so that the ranks' processes still end with acc launch.
  // Returns false when the watchdog died and cannot be replaced.
  bool reap_other_child(pid_t pid, int wait_status) {
    if (pid != watchdog.pid()) return true;
    const bool replaced = watchdog.replace();
    const std::string failure = replaced ? "" : std::strerror(errno);
    report("the watchdog process (pid " + std::to_string(pid) + ") " + describe_exit(wait_status) +
           (replaced ? "; started a new one (pid " + std::to_string(watchdog.pid()) + ")"
                     : "; cannot start a new one: " + failure + "; stopping the job"));
    return replaced;
  }

  // Waits `delay` between starts, reaping what ends meanwhile; returns the exit code when the job
  // must end instead: a signal came, or the watchdog died and cannot be replaced.
  std::optional<int> pause_between_starts(std::chrono::duration<double> delay) {
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(delay);
    while (true) {
      const auto [signal, child_changed] = signals.read();
      if (signal) {
        report("received " + signal_name(*signal) + "; not restarting");
        return 128 + *signal;
      }
      int status = 0;
      pid_t pid;
      while (child_changed && (pid = waitpid(-1, &status, WNOHANG)) > 0)
        if (!reap_other_child(pid, status)) return kExitLauncherError;
      if (Clock::now() >= until) return std::nullopt;
      pollfd watched{signals.fd(), POLLIN, 0};
      poll(&watched, 1, milliseconds_until(until));
    }
  }

  // Once the ranks are gone: lets the readers take what waits to be written for as long as they
  // keep reading. One that takes nothing for kOutputPatience, or a signal, ends the wait.
  void drain_output() {
    for (OutputStream* stream : {&out, &err})
      if (stream->dropped_lines() > 0)
        report(std::to_string(stream->dropped_lines()) + " line(s) of the ranks' output to " + stream->name() +
               " were dropped: it was not read fast enough");
    // A report about one stream goes to err, so err is waited for until nothing more comes.
    std::vector<const OutputStream*> abandoned;
    const auto waiting = [&](const OutputStream& stream) {
      return !stream.idle() && std::count(abandoned.begin(), abandoned.end(), &stream) == 0;
    };
    while (waiting(out) || waiting(err)) {
      for (OutputStream* stream : {&out, &err})
        if (waiting(*stream) && stream->stalled_for() >= kOutputPatience) {
          abandoned.push_back(stream);
          report(stream->name() + " has not been read for " +
                 format_seconds(std::chrono::duration<double>(kOutputPatience).count()) +
                 "; exiting without the last " + std::to_string(stream->waiting_bytes()) + " bytes written to it");
        }
      pollfd watched{signals.fd(), POLLIN, 0};
      if (poll(&watched, 1, 10) > 0 && signals.read().first) return;
    }
  }
};

// One start of the local group: its ranks, supervised until all of them are gone.
class Job {
 public:
  // `restart`: how many times the group was started before (TORCHELASTIC_RESTART_COUNT).
  Job(Supervision& supervision, int port, int restart)
      : supervision_(supervision),
        options_(supervision.options),
        signals_(supervision.signals),
        watchdog_(supervision.watchdog),
        port_(port),
        restart_(restart) {}
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  struct Outcome {
    int exit_code;
    bool may_restart;  // a rank failed, no signal asked the job to end, and every process of the group is gone
  };

  Outcome run() {
    start_ranks();
    supervise();
    for (Rank& rank : ranks_) {
      if (rank.stdout_forwarder) rank.stdout_forwarder->finish();
      if (rank.stderr_forwarder) rank.stderr_forwarder->finish();
    }
    // A signal that came while a failed group was stopping ends the job with its code: the user
    // asked for the end, which a restart would override.
    if (signalled_) return {128 + *signalled_, false};
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
    std::vector<std::string> environment =
        rank_environment(options_, supervision_.machine, port_, restart_, local_rank, environ);
    std::vector<char*> argv = null_terminated(arguments);
    std::vector<char*> envp = null_terminated(environment);
    // With --tee or --log_dir the rank's output passes through the launcher; else the rank writes
    // to the launcher's stdout and stderr itself.
    RankLogs* const logs = supervision_.logs;
    const bool piped = options_.tee || logs;
    Pipe exec_error, out, err;
    if (!exec_error.open() || (piped && (!out.open() || !err.open()))) return fail_to_start("pipe", errno);

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
    if (piped) {
      const std::string prefix = options_.tee ? "[rank " + std::to_string(rank.rank) + "] " : "";
      LogCopy stdout_copy, stderr_copy;
      if (logs) {
        stdout_copy = {logs->stdout_fd(local_rank), logs->stdout_path(local_rank), &supervision_.err};
        stderr_copy = {logs->stderr_fd(local_rank), logs->stderr_path(local_rank), &supervision_.err};
      }
      rank.stdout_forwarder =
          std::make_unique<LineForwarder>(out.release_read_end(), supervision_.out, prefix, std::move(stdout_copy));
      rank.stderr_forwarder =
          std::make_unique<LineForwarder>(err.release_read_end(), supervision_.err, prefix, std::move(stderr_copy));
    }

    int exec_errno = 0;
    ssize_t received;
    do received = read(exec_error.read_end(), &exec_errno, sizeof exec_errno);
    while (received < 0 && errno == EINTR);
    if (received <= 0) return;  // exec succeeded and closed the pipe

    const std::string& program = options_.program_and_arguments.front();
    const bool searched_path = program.find('/') == std::string::npos;
    supervision_.report("cannot run '" + program + "': " +
                        (exec_errno == ENOENT && searched_path ? "not found in PATH" : std::strerror(exec_errno)));
    stop(kExitCannotExecute, SIGTERM);
  }

  void fail_to_start(const char* what, int error) {
    supervision_.report(std::string("cannot start a rank: ") + what + "() failed: " + std::strerror(error));
    stop(kExitLauncherError, SIGTERM);
  }

  void supervise() {
    while (true) {
      forget_empty_groups();
      if (running_ranks() == 0 && ranks_with_processes() == 0) return;
      if (running_ranks() == 0 && !kill_at_) {
        supervision_.report("all ranks have exited, but processes they started still run in the process groups of " +
                            std::to_string(ranks_with_processes()) + " rank(s); stopping them");
        stop(0, SIGTERM);
      }

      const auto deadline = killed_ ? give_up_at_ : kill_at_;
      if (deadline && Clock::now() >= *deadline) {
        if (killed_) {
          supervision_.report("processes of " + std::to_string(ranks_with_processes()) + " rank(s) are still there " +
                              format_seconds(std::chrono::duration<double>(kKillWait).count()) +
                              " after SIGKILL (stuck in the kernel?); exiting without them");
          return;
        }
        supervision_.report("processes of " + std::to_string(ranks_with_processes()) + " rank(s) still run " +
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

    if (poll(watched.data(), watched.size(), deadline ? milliseconds_until(*deadline) : -1) <= 0) return;

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
    while ((pid = waitpid(-1, &status, WNOHANG | WUNTRACED)) > 0) {
      const auto rank = std::find_if(ranks_.begin(), ranks_.end(), [&](const Rank& r) { return r.pid == pid; });
      if (WIFSTOPPED(status)) {
        if (rank != ranks_.end()) stopped_by_terminal(*rank, WSTOPSIG(status));
        continue;
      }
      if (rank == ranks_.end()) {
        if (!supervision_.reap_other_child(pid, status)) stop(kExitLauncherError, SIGTERM);
        continue;
      }
      rank->running = false;
      const bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (!failed || exit_code_) continue;  // ranks that end while the job stops are expected to
      const int others = running_ranks();
      supervision_.report("rank " + std::to_string(rank->rank) + " (pid " + std::to_string(pid) + ") " +
                          describe_exit(status) +
                          (others > 0 ? "; stopping the other " + std::to_string(others) + " rank(s)" : ""));
      stop(exit_code_of(status), SIGTERM);
      rank_failed_ = true;
    }
  }

  // A rank runs in a process group of its own, in the background of acc launch's terminal: reading
  // it (or writing to it under `stty tostop`) stops the rank, which would wait for ever. Other stops
  // (SIGSTOP, a debugger's) are someone's intent and left alone.
  void stopped_by_terminal(const Rank& rank, int signal) {
    if ((signal != SIGTTIN && signal != SIGTTOU) || exit_code_) return;
    supervision_.report("rank " + std::to_string(rank.rank) + " (pid " + std::to_string(rank.pid) +
                        ") was stopped by " + signal_name(signal) + ": it " +
                        (signal == SIGTTIN ? "read from" : "wrote to") +
                        " the terminal, which ranks cannot (each runs in a process group of its own); give the "
                        "program its input from a file or a pipe (PROGRAM < FILE); stopping the job");
    stop(128 + signal, SIGTERM);
  }

  void forward_signal(int signal) {
    supervision_.report("received " + signal_name(signal) + "; passing it on to " + std::to_string(running_ranks()) +
                        " rank(s)");
    if (!signalled_) signalled_ = signal;
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
      // A stopped process takes the signal only once it runs again.
      if (kill(-rank.pid, SIGCONT) != 0 && rank.running) kill(rank.pid, SIGCONT);
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

  Supervision& supervision_;
  const LaunchOptions& options_;
  SignalWatch& signals_;
  GroupWatchdog& watchdog_;
  const int port_;
  const int restart_;
  std::vector<Rank> ranks_;
  std::optional<int> exit_code_;                 // set by the first failure or signal
  bool rank_failed_ = false;                     // the first failure was a rank's (not a signal, not exec)
  std::optional<int> signalled_;                 // the first signal acc launch received, at any time
  int stop_signal_ = SIGTERM;                    // what the ranks were asked to stop with
  std::optional<Clock::time_point> kill_at_;     // end of the grace period, once stopping
  bool killed_ = false;                          // SIGKILL sent
  std::optional<Clock::time_point> give_up_at_;  // when to stop waiting for SIGKILLed processes
};

// The rendezvous port of one start: --main_process_port, or a free one. A restart on a single
// machine takes a fresh one, so that nothing of the previous start (a connection in TIME_WAIT, a
// late rank) meets the new rendezvous; across machines the port must stay what the others know.
std::optional<int> rendezvous_port(Supervision& supervision, std::optional<int> previous) {
  const LaunchOptions& options = supervision.options;
  if (options.main_process_port != 0) return options.main_process_port;
  if (previous && options.num_machines > 1) return previous;
  std::string error;
  const auto picked = pick_free_port(options.main_process_ip, error);
  if (!picked) {
    supervision.report("--main_process_port 0: cannot pick a free port on " + options.main_process_ip + ": " + error);
    return std::nullopt;
  }
  if (options.num_machines > 1)
    supervision.report("picked --main_process_port " + std::to_string(*picked) +
                       "; pass the same to the other machines");
  return picked;
}

// Starts the local group, and again after a rank fails while --max_restarts allows, each time
// after a delay that doubles from --restart_delay up to --max_restart_delay.
int supervise_starts(Supervision& supervision) {
  const LaunchOptions& options = supervision.options;
  std::optional<int> port;
  double delay = options.restart_delay_seconds;
  for (int restart = 0;; ++restart) {
    port = rendezvous_port(supervision, port);
    if (!port) return restart == 0 ? kExitUsage : kExitLauncherError;
    const Job::Outcome outcome = Job(supervision, *port, restart).run();
    if (outcome.exit_code == 0 || !outcome.may_restart) return outcome.exit_code;
    if (restart == options.max_restarts) {
      if (options.max_restarts > 0)
        supervision.report("no restart left (--max_restarts " + std::to_string(options.max_restarts) +
                           "); exiting with code " + std::to_string(outcome.exit_code));
      return outcome.exit_code;
    }
    // A signal that comes between the group's end and the pause, or during it, ends the job.
    if (const auto exit_code = supervision.pause_between_starts(std::chrono::seconds(0))) return *exit_code;
    supervision.report("restart " + std::to_string(restart + 1) + " of " + std::to_string(options.max_restarts) +
                       " in " + format_seconds(delay) + ": starting the " +
                       std::to_string(options.processes_per_machine()) + " local rank(s) again");
    if (const auto exit_code = supervision.pause_between_starts(std::chrono::duration<double>(delay)))
      return *exit_code;
    if (supervision.logs)
      supervision.logs->append_to_all("acc launch: restart " + std::to_string(restart + 1) + " of " +
                                      std::to_string(options.max_restarts) + " begins\n");
    delay = std::min(2 * delay, std::max(options.restart_delay_seconds, options.max_restart_delay_seconds));
  }
}

}  // namespace

int run_launch(const LaunchOptions& options, const Machine& machine, RankLogs* logs) {
  SignalWatch signals;
  if (const auto failure = signals.start()) {
    write_all(STDERR_FILENO, "acc launch: " + *failure + "\n");
    return kExitLauncherError;
  }
  // Created after the signals are blocked, so that their threads never take one of them.
  OutputStream out(STDOUT_FILENO, "stdout"), err(STDERR_FILENO, "stderr");
  // Orphans of the ranks become the launcher's children, so it can reap them and none is left as
  // a zombie under an init that does not reap.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  GroupWatchdog watchdog;
  Supervision supervision{options, machine, signals, watchdog, out, err, logs};
  int exit_code = kExitLauncherError;
  if (watchdog.start())
    exit_code = supervise_starts(supervision);
  else
    supervision.report(std::string("cannot start the watchdog process: ") + std::strerror(errno));
  watchdog.finish();
  supervision.drain_output();
  return exit_code;
}

int launch_command(const std::vector<std::string>& arguments) {
  const Machine machine = this_machine();
  const LaunchParse parsed = parse_launch_arguments(arguments, machine);
  if (std::holds_alternative<HelpRequested>(parsed)) {
    write_all(STDOUT_FILENO, launch_usage());
    return 0;
  }
  // Nothing runs yet that waiting on the output could hold up.
  if (const auto* error = std::get_if<UsageError>(&parsed)) {
    write_all(STDERR_FILENO, "acc launch: " + error->message + "\n");
    return kExitUsage;
  }
  const auto& options = std::get<LaunchOptions>(parsed);
  // Checked before any rank starts: a directory that cannot take the logs is a usage error.
  RankLogs logs;
  if (options.log_dir)
    if (const auto error = logs.open(*options.log_dir, options.machine_rank * options.processes_per_machine(),
                                     options.processes_per_machine())) {
      write_all(STDERR_FILENO, "acc launch: --log_dir '" + *options.log_dir + "' cannot be used: " + *error +
                                   "; pass a directory that acc launch can create and write to\n");
      return kExitUsage;
    }
  return run_launch(options, machine, options.log_dir ? &logs : nullptr);
}

}  // namespace acc::cli
