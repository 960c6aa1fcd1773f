#include "test_command.hpp"

#include "companion_program.hpp"
#include "config_command.hpp"
#include "launch.hpp"
#include "output_stream.hpp"

#include <unistd.h>

#include <string>
#include <vector>

namespace acc::cli {
namespace {

constexpr const char* kTestUsage = R"usage(usage: acc test [--config_file PATH]

Checks that training works with a config: runs acc_sanity_check (built and installed next to acc)
under `acc launch --config_file PATH`, or the default config ($HF_HOME/accelerate/default_config.yaml)
when PATH is not given. Every rank creates the Accelerator the config selects, checks an all-reduce
and a gather, trains a tiny model for 5 steps on data of its own, and checks that the weights end
the same on every rank. Prints "acc test: passed on N processes (...)", or what failed on which
rank, and exits with the check's exit code (0 when it passed).
)usage";

int fail(const std::string& message, int exit_code) {
  write_all(STDERR_FILENO, "acc test: " + message + "\n");
  return exit_code;
}

}  // namespace

int test_command(const std::vector<std::string>& arguments) {
  const auto parsed = parse_command_line(arguments, {"--config_file"});
  if (const auto* error = std::get_if<UsageError>(&parsed)) return fail(error->message, kExitUsage);
  const CommandLine& command_line = std::get<CommandLine>(parsed);
  if (command_line.help) {
    write_all(STDOUT_FILENO, kTestUsage);
    return 0;
  }
  if (!command_line.words.empty())
    return fail("unexpected argument '" + command_line.words.front() + "'; usage: acc test [--config_file PATH]",
                kExitUsage);

  const auto program = find_companion_program(kSanityCheckProgram, "sanity check program");
  if (!program.error.empty()) return fail(program.error, kExitCannotExecute);

  std::vector<std::string> launch_arguments;
  if (const auto flag = command_line.flag_values.find("--config_file"); flag != command_line.flag_values.end())
    launch_arguments = {"--config_file", flag->second};
  launch_arguments.insert(launch_arguments.end(), {"--", program.path});
  const int exit_code = launch_command(launch_arguments);
  if (exit_code != 0) fail("failed (exit code " + std::to_string(exit_code) + ")", exit_code);
  return exit_code;
}

}  // namespace acc::cli
