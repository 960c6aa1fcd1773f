#include "env_command.hpp"

#include "companion_program.hpp"
#include "config_command.hpp"
#include "launch.hpp"
#include "launch_options.hpp"
#include "rank_environment.hpp"

#include <acc/config/config.hpp>
#include <acc/version.hpp>

#include <sys/utsname.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

extern char** environ;

// src/cli/CMakeLists.txt passes what this build found: the tool itself does not link libtorch.
#ifndef ACC_TORCH_VERSION
#define ACC_TORCH_VERSION "unknown"
#endif

namespace acc::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kEnvUsage = R"(usage: acc env [--config_file PATH] [--model MODEL]

Prints what a bug report needs: the versions of accelerate-cpp, the compiler and the libtorch it was
built against, the platform, the NVIDIA driver and GPUs, the communication backends of this build,
what each device has free (the budgets of device_map="auto", as acc estimate-memory --device_map
shows a model's map), the variables that override the config, and the config a launched program
would read: PATH, else the file ACC_CONFIG_FILE names, else the one acc config wrote. A config or
variable that cannot be used is reported with the loader's error, and the exit code is then 1.

  --model MODEL   also show the device map that device_map="auto" gives MODEL (a .safetensors
                  file, a sharded model's index, or their folder, as acc estimate-memory takes) in
                  a program that acc launch starts with this config: on the GPUs its gpu_ids
                  leave visible, within what they and the host have free. A map that cannot be
                  made (the model fits nowhere, or acc launch would refuse the config) is reported
                  with why, and the exit code is then 1.
)";

constexpr int kExitBadConfig = 1;

// GCC's __VERSION__ is a bare number such as "12.2.0"; Clang's already names the compiler.
#if defined(__GNUC__) && !defined(__clang__)
constexpr const char* kCompiler = "GCC " __VERSION__;
#else
constexpr const char* kCompiler = __VERSION__;
#endif

std::string platform() {
  utsname names;
  if (uname(&names) != 0) return "unknown";
  return std::string(names.sysname) + " " + names.release + " " + names.machine;
}

std::string cuda_driver() {
  std::ifstream version_file("/proc/driver/nvidia/version");
  std::string first_line;
  if (!std::getline(version_file, first_line)) return "none";
  first_line.erase(first_line.find_last_not_of(" \t") + 1);  // the driver pads it with spaces
  return first_line.empty() ? "none" : first_line;
}

// One entry per GPU the driver lists, in PCI order: the "Model:" line of its information file.
std::vector<std::string> gpu_models() {
  std::vector<fs::path> gpu_folders;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc/driver/nvidia/gpus", error))
    gpu_folders.push_back(entry.path());
  std::sort(gpu_folders.begin(), gpu_folders.end());

  std::vector<std::string> models;
  for (const fs::path& folder : gpu_folders) {
    std::string model = "unknown model";
    std::ifstream information(folder / "information");
    for (std::string line; std::getline(information, line);) {
      const std::size_t name_start = line.find_first_not_of(" \t", 6);  // after "Model:"
      if (line.rfind("Model:", 0) == 0 && name_start != std::string::npos) model = line.substr(name_start);
    }
    models.push_back(model);
  }
  return models;
}

// "0", or the count and the models, such as "2 (NVIDIA H200, NVIDIA H200)".
std::string gpus() {
  const std::vector<std::string> models = gpu_models();
  if (models.empty()) return "0";
  std::string names;
  for (const std::string& model : models) names += (names.empty() ? "" : ", ") + model;
  return std::to_string(models.size()) + " (" + names + ")";
}

// What the devices have free, as acc_device_map reads it (libtorch's view, which acc lacks): the
// budgets a device map plans within when none are given.
std::string free_memory() {
  const auto program = find_companion_program(kDeviceMapProgram, "device map program");
  if (!program.error.empty()) return "unknown (" + program.error + ")";
  std::string error, output;
  const int exit_code = run_program({program.path, "--free_memory"}, error, &output);
  if (exit_code != 0 || output.empty())
    return "unknown (" + (exit_code < 0 ? error : program.path + " exited with " + std::to_string(exit_code)) + ")";
  return output.substr(0, output.size() - 1);
}

const char* built_in(bool has_backend) { return has_backend ? "built in" : "not in this build"; }

// Lines that end in a newline, each on a new line indented under an "- Item:" line.
std::string indented_lines(const std::string& lines) {
  std::string indented;
  for (const char c : lines) indented += c == '\n' ? "\n  " : std::string(1, c);
  return "\n  " + indented.substr(0, indented.size() - 2);
}

// The config indented under "- Active config:" as the loader read it, or why there is none to
// show; `error` gets the loader's message.
std::string active_config(const fs::path& path, bool named, std::optional<std::string>& error) {
  if (!named && !fs::exists(path)) return " not found\n";
  try {
    return indented_lines(acc::Config::from_yaml_file(path).to_yaml());
  } catch (const acc::Error& e) {
    error = e.what();
    return " cannot be used: " + *error + "\n";
  }
}

// The variables of the config's keys that are set, which override the file in a launched program.
std::string environment_overrides(std::optional<std::string>& error) {
  std::string listed;
  for (const acc::ConfigKey& key : acc::config_keys())
    if (!key.variable.empty())
      if (const auto value = acc::process_variable(key.variable))
        listed += "\n  " + std::string(key.variable) + "=" + acc::detail::printable(*value);
  try {
    acc::Config().with_overrides(acc::process_variable);
  } catch (const acc::Error& e) {
    error = e.what();
    return " cannot be used: " + *error + "\n";
  }
  return listed.empty() ? " none\n" : listed + "\n";
}

// The map of "auto" for `model`, as rank 0 of `acc launch` with this config plans it: acc_device_map
// runs with the variables that rank gets (CUDA_VISIBLE_DEVICES from gpu_ids among them). Indented
// under "- Device map of MODEL:", or why there is none; `error` gets the reason.
std::string device_map_of(const std::string& model, const fs::path& config_path, std::optional<std::string>& error) {
  const auto program = find_companion_program(kDeviceMapProgram, "device map program");
  if (!program.error.empty()) {
    error = program.error;
    return " cannot be planned: " + *error + "\n";
  }
  std::vector<std::string> launch_arguments;
  if (fs::exists(config_path)) launch_arguments = {"--config_file", config_path.string()};
  // acc_device_map COMMAND MODEL DEVICE_MAP MAX_MEMORY NO_SPLIT DTYPE: what the devices have free,
  // no class kept whole, the checkpoint's dtypes.
  launch_arguments.insert(launch_arguments.end(), {program.path, "env", model, "auto", "", "", ""});
  const Machine machine = this_machine();
  const LaunchParse parsed = parse_launch_arguments(launch_arguments, machine);
  if (const auto* refused = std::get_if<UsageError>(&parsed)) {
    error = "acc launch would refuse this config: " + refused->message;
    return " cannot be planned: " + *error + "\n";
  }
  const LaunchOptions& options = std::get<LaunchOptions>(parsed);
  const std::vector<std::string> variables =
      rank_environment(options, machine, options.main_process_port, /*restart=*/0, /*local_rank=*/0, environ);
  std::string output, start_error;
  const int exit_code = run_program(options.program_and_arguments, start_error, &output, &variables);
  if (exit_code != 0) {
    // The program has said why on stderr; this names the map as the part that failed.
    error = exit_code < 0 ? start_error : "no device map for " + model + " (above)";
    return " cannot be planned: " + *error + "\n";
  }
  return indented_lines(output);
}

}  // namespace

int env_command(const std::vector<std::string>& arguments) {
  const auto parsed = parse_command_line(arguments, {"--config_file", "--model"});
  if (const auto* error = std::get_if<UsageError>(&parsed)) {
    std::cerr << "acc env: " << error->message << "\n";
    return kExitUsage;
  }
  const CommandLine& command_line = std::get<CommandLine>(parsed);
  if (command_line.help) {
    std::cout << kEnvUsage;
    return 0;
  }
  if (!command_line.words.empty()) {
    std::cerr << "acc env: unexpected argument '" << command_line.words.front()
              << "'; usage: acc env [--config_file PATH] [--model MODEL]\n";
    return kExitUsage;
  }
  const auto flag = command_line.flag_values.find("--config_file");
  const ConfigFileInUse config_file = config_file_in_use(
      flag != command_line.flag_values.end() ? std::optional<std::string>(flag->second) : std::nullopt);
  const fs::path& config_path = config_file.path;
  std::optional<std::string> config_error, overrides_error;
  const std::string config_text = active_config(config_path, config_file.named, config_error);
  const std::string overrides_text = environment_overrides(overrides_error);

  std::cout << "Copy-and-paste the text below in your GitHub issue\n\n"
            << "- accelerate-cpp version: " << acc::version << "\n"
            << "- Platform: " << platform() << "\n"
            << "- Compiler: " << kCompiler << "\n"
            << "- libtorch version the tool was built against: " << ACC_TORCH_VERSION << "\n"
            << "- CUDA driver: " << cuda_driver() << "\n"
            << "- GPUs: " << gpus() << "\n"
            << "- NCCL: " << built_in(ACC_HAS_NCCL) << "\n"
            << "- Gloo: " << built_in(ACC_HAS_GLOO) << "\n"
            << "- CPU cores: " << std::thread::hardware_concurrency() << "\n"
            << "- Free memory for device maps: " << free_memory() << "\n"
            << "- Config file: " << acc::detail::printable(config_path.string())
            << (fs::exists(config_path) ? " (exists)" : " (not found)") << "\n"
            << "- Environment overrides:" << overrides_text << "- Active config:" << config_text << std::flush;
  for (const auto& error : {config_error, overrides_error})
    if (error) std::cerr << "acc env: " << *error << "\n";
  std::optional<std::string> map_error;
  if (const auto model = command_line.flag_values.find("--model"); model != command_line.flag_values.end()) {
    std::cout << "- Device map of " << acc::detail::printable(model->second) << ":" << std::flush;
    std::cout << (config_error || overrides_error ? " cannot be planned: the config cannot be used (above)\n"
                                                  : device_map_of(model->second, config_path, map_error))
              << std::flush;
    if (map_error) std::cerr << "acc env: " << *map_error << "\n";
  }
  return config_error || overrides_error || map_error ? kExitBadConfig : 0;
}

}  // namespace acc::cli
