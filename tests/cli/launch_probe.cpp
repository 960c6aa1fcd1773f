// A stand-in for a training program, started by `acc launch` in the tests. Its arguments are steps
// run left to right, e.g. `spawn-child wait-for-pids 6 exit-on-rank 1 3 sleep 60`.
// When ACC_PROBE_PID_FILE is set, the probe and every child it spawns append their pid to it, so
// that a test can check afterwards that none of them is left.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

namespace {

void record_pid() {
  const char* path = std::getenv("ACC_PROBE_PID_FILE");
  if (!path) return;
  const std::string line = std::to_string(getpid()) + "\n";
  // One short O_APPEND write, so that lines from several processes do not mix.
  const int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  [[maybe_unused]] const ssize_t written = write(fd, line.data(), line.size());
  close(fd);
}

std::size_t recorded_pids() {
  const char* path = std::getenv("ACC_PROBE_PID_FILE");
  if (!path) return 0;
  std::ifstream file(path);
  std::size_t count = 0;
  for (std::string line; std::getline(file, line);) ++count;
  return count;
}

void sleep_seconds(double seconds) { std::this_thread::sleep_for(std::chrono::duration<double>(seconds)); }

// Prints the variables acc launch sets, as one line written at once so that ranks do not mix.
void print_environment() {
  std::string line = "env";
  for (const char* name : {"RANK",
                           "WORLD_SIZE",
                           "LOCAL_RANK",
                           "LOCAL_WORLD_SIZE",
                           "GROUP_RANK",
                           "GROUP_WORLD_SIZE",
                           "MASTER_ADDR",
                           "MASTER_PORT",
                           "ACCELERATE_USE_CPU",
                           "ACCELERATE_MIXED_PRECISION",
                           "CUDA_VISIBLE_DEVICES",
                           "ACC_RDZV_TIMEOUT",
                           "OMP_NUM_THREADS",
                           "ACC_CONFIG_FILE",
                           "ACC_DISTRIBUTED_TYPE",
                           "TORCHELASTIC_RESTART_COUNT",
                           "TORCHELASTIC_MAX_RESTARTS",
                           "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
                           "ACCELERATE_DEBUG_MODE",
                           "PARALLELISM_CONFIG_DP_REPLICATE_SIZE",
                           "PARALLELISM_CONFIG_DP_SHARD_SIZE",
                           "PARALLELISM_CONFIG_TP_SIZE"}) {
    const char* value = std::getenv(name);
    line += std::string(" ") + name + "=" + (value ? value : "<unset>");
  }
  line += "\n";
  [[maybe_unused]] const ssize_t written = write(STDOUT_FILENO, line.data(), line.size());
}

void write_text(int fd, const std::string& text) {
  [[maybe_unused]] const ssize_t written = write(fd, text.data(), text.size());
}

// Output for --tee: one line in two writes, one on stderr, and a last one without a newline.
void print_lines() {
  write_text(STDOUT_FILENO, "out line 1\nout ");
  sleep_seconds(0.05);
  write_text(STDOUT_FILENO, "line 2\n");
  write_text(STDERR_FILENO, "err line 1\n");
  write_text(STDOUT_FILENO, "no newline at end");
}

// Lines of a whole page each, so that the pipe ends up full to the last byte: a shorter line
// would leave a few bytes free in each page, enough for a short write of someone else's.
[[noreturn]] void flood(int fd) {
  const std::string line = std::string(4095, 'x') + "\n";
  while (true) write_text(fd, line);
}

int integer_variable(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::atoi(value) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  // A leading ignore-term holds before the pid is recorded: a test that waits for the pids and then
  // has the launcher send SIGTERM must find this rank ignoring it, however late it was scheduled.
  if (argc > 1 && std::string(argv[1]) == "ignore-term") signal(SIGTERM, SIG_IGN);
  record_pid();
  for (int i = 1; i < argc; ++i) {
    const std::string step = argv[i];
    const auto next_number = [&] {
      if (++i >= argc) {
        std::cerr << "launch_probe: " << step << " needs a number\n";
        std::exit(64);
      }
      return std::atof(argv[i]);
    };
    if (step == "env") {
      print_environment();
    } else if (step == "print-lines") {
      print_lines();
    } else if (step == "sleep") {
      sleep_seconds(next_number());
    } else if (step == "ignore-term") {
      signal(SIGTERM, SIG_IGN);
    } else if (step == "spawn-child") {  // a grandchild of acc launch, in the rank's process group
      if (fork() == 0) {
        record_pid();
        sleep_seconds(60);
        return 0;
      }
    } else if (step == "wait-for-pids") {  // until this start of the job has recorded its N pids, at most 5 s
      // After --max_restarts' restarts the file holds the earlier starts' pids as well.
      const auto starts = static_cast<std::size_t>(std::max(0, integer_variable("TORCHELASTIC_RESTART_COUNT")) + 1);
      const auto count = static_cast<std::size_t>(next_number()) * starts;
      for (int tries = 0; tries < 500 && recorded_pids() < count; ++tries) sleep_seconds(0.01);
    } else if (step == "flood-on-rank") {  // `flood-on-rank R FD`: rank R prints lines to FD until stopped
      const int flooding_rank = static_cast<int>(next_number());
      const int fd = static_cast<int>(next_number());
      if (integer_variable("RANK") == flooding_rank) flood(fd);
    } else if (step == "exit-on-rank") {
      const int failing_rank = static_cast<int>(next_number());
      const int code = static_cast<int>(next_number());
      if (integer_variable("RANK") == failing_rank) return code;
    } else if (step == "until-restart") {  // the steps after it run only before restart N
      if (integer_variable("TORCHELASTIC_RESTART_COUNT") >= static_cast<int>(next_number())) return 0;
    } else {
      std::cerr << "launch_probe: unknown step " << step << "\n";
      return 64;
    }
  }
  return 0;
}
