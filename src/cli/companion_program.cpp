#include "companion_program.hpp"

#include "rank_environment.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

extern char** environ;

namespace acc::cli {

CompanionProgram find_companion_program(const std::string& name, const std::string& what) {
  std::error_code code;
  const auto executable = std::filesystem::read_symlink("/proc/self/exe", code);
  if (code) return {"", "cannot read /proc/self/exe: " + code.message()};
  const std::string path = (executable.parent_path() / name).string();
  if (access(path.c_str(), X_OK) != 0)
    return {path, "the " + what + " " + path + " is missing or not executable (" + std::strerror(errno) +
                      "); it is built and installed next to acc: build the target " + name +
                      " (or reinstall accelerate-cpp)"};
  return {path, ""};
}

int run_program(const std::vector<std::string>& argv, std::string& error, std::string* output,
                const std::vector<std::string>* environment) {
  std::vector<char*> pointers = null_terminated(argv);
  std::vector<char*> variables = environment ? null_terminated(*environment) : std::vector<char*>();
  int pipe_ends[2] = {-1, -1};
  if (output && pipe2(pipe_ends, O_CLOEXEC) != 0) {
    error = "cannot make a pipe for " + argv.front() + ": " + std::strerror(errno);
    return -1;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (output) posix_spawn_file_actions_adddup2(&actions, pipe_ends[1], STDOUT_FILENO);
  pid_t pid = 0;
  const int failed =
      posix_spawn(&pid, pointers.front(), &actions, nullptr, pointers.data(), environment ? variables.data() : environ);
  posix_spawn_file_actions_destroy(&actions);
  if (output) close(pipe_ends[1]);
  if (failed) {
    if (output) close(pipe_ends[0]);
    error = "cannot start " + argv.front() + ": " + std::strerror(failed);
    return -1;
  }
  if (output) {
    char buffer[4096];
    for (ssize_t got; (got = read(pipe_ends[0], buffer, sizeof buffer)) != 0;)
      if (got > 0)
        output->append(buffer, static_cast<std::size_t>(got));
      else if (errno != EINTR)
        break;
    close(pipe_ends[0]);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      error = "cannot wait for " + argv.front() + ": " + std::strerror(errno);
      return -1;
    }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace acc::cli
