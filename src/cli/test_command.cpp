#include "test_command.hpp"

#include "config_command.hpp"
#include "launch.hpp"
#include "output_stream.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

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

// The folder of the running executable (/proc/self/exe), where acc_sanity_check is installed too.
std::filesystem::path own_folder(std::string& error) {
  std::error_code code;
  const auto executable = std::filesystem::read_symlink("/proc/self/exe", code);
  if (code) {
    error = "cannot read /proc/self/exe: " + code.message();
    return {};
  }
  return executable.parent_path();
}

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

  std::string error;
  const auto folder = own_folder(error);
  if (!error.empty()) return fail(error, kExitCannotExecute);
  const std::string program = (folder / kSanityCheckProgram).string();
  if (access(program.c_str(), X_OK) != 0)
    return fail("the sanity check program " + program + " is missing or not executable (" + std::strerror(errno) +
                    "); it is built and installed next to acc: build the target " + kSanityCheckProgram +
                    " (or reinstall accelerate-cpp)",
                kExitCannotExecute);

  std::vector<std::string> launch_arguments;
  if (const auto flag = command_line.flag_values.find("--config_file"); flag != command_line.flag_values.end())
    launch_arguments = {"--config_file", flag->second};
  launch_arguments.insert(launch_arguments.end(), {"--", program});
  const int exit_code = launch_command(launch_arguments);
  if (exit_code != 0) fail("failed (exit code " + std::to_string(exit_code) + ")", exit_code);
  return exit_code;
}

}  // namespace acc::cli
