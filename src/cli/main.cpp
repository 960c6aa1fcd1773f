// The `acc` command-line tool: `acc launch`, `acc config`, `acc env`, `acc estimate-memory`,
// `acc merge-weights` and `acc test`.
#include "config_command.hpp"
#include "env_command.hpp"
#include "estimate_memory_command.hpp"
#include "launch.hpp"
#include "merge_weights_command.hpp"
#include "output_stream.hpp"
#include "test_command.hpp"

#include <acc/version.hpp>

#include <unistd.h>

#include <string>
#include <vector>

namespace {

constexpr const char* kUsage = R"(usage: acc COMMAND [ARGS...]

commands:
  launch      start a program once per rank and supervise it (acc launch --help)
  config      ask how training runs and save it as a config file (acc config --help)
  env         print the versions, devices and config for a bug report (acc env --help)
  estimate-memory
              the memory training takes per process, by strategy (acc estimate-memory --help)
  merge-weights
              full weights from a checkpoint saved with SHARDED_STATE_DICT (acc merge-weights --help)
  test        check that training works with the config: a small built-in program under
              acc launch (acc test --help)

  -h, --help  show this help
  --version   print the version
)";

int fail(const std::string& line) {
  acc::cli::write_all(STDERR_FILENO, line + "\n");
  return acc::cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> arguments(argv + 1, argv + argc);
  if (arguments.empty())
    return fail(
        "acc: no command given; valid commands: launch, config, env, estimate-memory, merge-weights, test (acc "
        "--help)");

  const std::string& command = arguments.front();
  if (command == "-h" || command == "--help") {
    acc::cli::write_all(STDOUT_FILENO, kUsage);
    return 0;
  }
  if (command == "--version") {
    acc::cli::write_all(STDOUT_FILENO, "acc (accelerate-cpp) " + std::string(acc::version) + "\n");
    return 0;
  }
  if (command == "launch") return acc::cli::launch_command({arguments.begin() + 1, arguments.end()});
  if (command == "config") return acc::cli::config_command({arguments.begin() + 1, arguments.end()});
  if (command == "env") return acc::cli::env_command({arguments.begin() + 1, arguments.end()});
  if (command == "test") return acc::cli::test_command({arguments.begin() + 1, arguments.end()});
  if (command == "merge-weights") return acc::cli::merge_weights_command({arguments.begin() + 1, arguments.end()});
  if (command == "estimate-memory") return acc::cli::estimate_memory_command({arguments.begin() + 1, arguments.end()});
  return fail("acc: unknown command '" + command +
              "'; valid commands: launch, config, env, estimate-memory, merge-weights, test (acc --help)");
}
