#include "estimate_memory_command.hpp"

#include "companion_program.hpp"
#include "config_command.hpp"
#include "launch.hpp"
#include "safetensors_parameters.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <variant>

namespace acc::cli {
namespace {

constexpr const char* kEstimateUsage =
    R"(usage: acc estimate-memory (MODEL | --num_parameters N) [--dtype float32|bfloat16|float16]
                           [--num_processes 1,2,4,8]
                           [--device_map NAME] [--max_memory LIST] [--no_split LIST]

Estimates the memory each process needs to train a model of N parameters with Adam (or AdamW),
for every strategy and number of processes: the weights, their gradients and Adam's state.
Activations, the batch and temporary buffers come on top of it.

  MODEL                a model saved as safetensors: a .safetensors file, a sharded model's
                       *.safetensors.index.json, or a folder holding model.safetensors or
                       model.safetensors.index.json (save_model writes them); N is the element
                       count of its tensors, read from the files' headers
  --num_parameters N   the parameter count: an integer, or a number with K, M, B or T (125M, 1.3B)
  --dtype D            float32 (default), or bfloat16 / float16 for mixed precision (acc::BF16,
                       acc::FP16: fp32 weights and gradients, half-precision compute)
  --num_processes LIST the numbers of processes to show, separated by commas (default 1,2,4,8)
  --device_map NAME    also show where big-model inference puts MODEL's weights: auto or
                       balanced (spread evenly over the GPUs), balanced_low_0 (GPU 0 as empty as it
                       can be), sequential (the GPUs filled in order), as load_checkpoint_and_dispatch
                       plans them (default auto when --max_memory or --no_split is given)
  --max_memory LIST    the budgets of the map, DEVICE=SIZE separated by commas: 0=20GiB,1=20GiB,
                       cpu=64GiB,disk=1TB (default: what the devices have free, of a single GPU 90%)
  --no_split LIST      modules never split across devices, separated by commas. Without the model's
                       class, every module the tensor names imply is a unit, named by its path with
                       numbers as *: layers.* keeps each of layers.0, layers.1, ... whole

Bytes per process, with W processes and S = ceil(N / W) parameters in each process's shard:

  strategy            weights                         gradients   Adam state
  Single, DDP         4N (+2N mixed)                  4N          8N
  FSDP NO_SHARD       4N (+2N mixed)                  4N          8N
  FSDP SHARD_GRAD_OP  4S + 4N (2N mixed)              4S          8S
  FSDP FULL_SHARD     4S                              4S          8S

Weights, gradients and Adam's two moments are fp32 (4 bytes each). Mixed precision adds the
half-precision copy of the weights that forward and backward compute with (2N), as Accelerate's
estimator counts it; SHARD_GRAD_OP keeps the whole model gathered, in the compute dtype, from a
unit's forward until its backward; FULL_SHARD gathers one or two units at a time, whose size
comes on top. Accelerate's table shows the largest of these terms; here they are added up, as
they are all held during the optimizer step.

The device map is computed by acc_device_map, built and installed next to acc: the weights in
MODEL's dtypes, or in --dtype when it is given; per device, the bytes placed there.
)";

constexpr std::uint64_t kMaxParameters = 1'000'000'000'000'000;  // 10^15: bytes stay far from overflow

int usage_error(const std::string& message) {
  std::cerr << "acc estimate-memory: " << message << "\n";
  return kExitUsage;
}

// "7000000000", "125M", "1.3B": digits with an optional fraction and an optional K, M, B or T.
std::optional<std::uint64_t> parse_parameter_count(const std::string& text) {
  std::size_t end = 0;
  while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.')) ++end;
  const std::string number = text.substr(0, end), suffix = text.substr(end);
  const bool well_formed = !number.empty() && std::isdigit(static_cast<unsigned char>(number.front())) &&
                           std::isdigit(static_cast<unsigned char>(number.back())) &&
                           std::count(number.begin(), number.end(), '.') <= 1;
  if (!well_formed || suffix.size() > 1) return std::nullopt;
  double multiplier = 1;
  if (!suffix.empty()) {
    constexpr std::array<std::pair<char, double>, 4> suffixes = {{{'K', 1e3}, {'M', 1e6}, {'B', 1e9}, {'T', 1e12}}};
    const auto found = std::find_if(suffixes.begin(), suffixes.end(), [&](const auto& entry) {
      return entry.first == std::toupper(static_cast<unsigned char>(suffix.front()));
    });
    if (found == suffixes.end()) return std::nullopt;
    multiplier = found->second;
  } else if (number.find('.') != std::string::npos) {
    return std::nullopt;  // a fraction of a parameter
  }
  const double value = std::strtod(number.c_str(), nullptr) * multiplier;
  if (!(value >= 1 && value <= static_cast<double>(kMaxParameters))) return std::nullopt;
  return static_cast<std::uint64_t>(std::llround(value));
}

// "1,2,8": process counts of at least 1, in the order given.
std::optional<std::vector<std::uint64_t>> parse_process_counts(const std::string& text) {
  std::vector<std::uint64_t> counts;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string piece = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (piece.empty() || piece.size() > 7 ||
        !std::all_of(piece.begin(), piece.end(), [](unsigned char c) { return std::isdigit(c); }) ||
        std::stoull(piece) == 0)
      return std::nullopt;
    counts.push_back(std::stoull(piece));
    if (comma == std::string::npos) return counts;
    start = comma + 1;
  }
}

enum class Strategy { kDdp, kNoShard, kShardGradOp, kFullShard };

struct Footprint {
  std::uint64_t weights = 0, gradients = 0, adam = 0;
  std::uint64_t total() const { return weights + gradients + adam; }
};

// The table in kEstimateUsage, for `n` parameters on `processes` processes.
Footprint footprint(Strategy strategy, std::uint64_t n, std::uint64_t processes, bool mixed) {
  const std::uint64_t shard = (n + processes - 1) / processes;
  const std::uint64_t half_copy = mixed ? 2 * n : 0;
  switch (strategy) {
    case Strategy::kDdp:
    case Strategy::kNoShard:
      return {4 * n + half_copy, 4 * n, 8 * n};
    case Strategy::kShardGradOp:
      return {4 * shard + (mixed ? 2 : 4) * n, 4 * shard, 8 * shard};
    case Strategy::kFullShard:
      return {4 * shard, 4 * shard, 8 * shard};
  }
  return {};
}

// Binary units with two decimals, as Accelerate's convert_bytes (which names them KB, MB, GB).
std::string human_bytes(std::uint64_t bytes) {
  constexpr std::array<const char*, 5> units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  for (value /= 1024; value >= 1024 && unit + 1 < units.size(); value /= 1024) ++unit;
  char text[32];
  std::snprintf(text, sizeof text, "%.2f %s", value, units[unit]);
  return text;
}

std::string padded(const std::string& text, std::size_t width, bool left_aligned) {
  const std::string fill(text.size() < width ? width - text.size() : 0, ' ');
  return left_aligned ? text + fill : fill + text;
}

}  // namespace

int estimate_memory_command(const std::vector<std::string>& arguments) {
  const auto parsed = parse_command_line(
      arguments, {"--num_parameters", "--dtype", "--num_processes", "--device_map", "--max_memory", "--no_split"});
  if (const auto* error = std::get_if<UsageError>(&parsed)) return usage_error(error->message);
  const CommandLine& command_line = std::get<CommandLine>(parsed);
  if (command_line.help) {
    std::cout << kEstimateUsage;
    return 0;
  }
  const auto flag = [&](const std::string& name, const std::string& fallback) {
    const auto found = command_line.flag_values.find(name);
    return found == command_line.flag_values.end() ? fallback : found->second;
  };
  constexpr const char* kShortUsage =
      "usage: acc estimate-memory (MODEL | --num_parameters N) [--dtype D] "
      "[--num_processes LIST] [--device_map NAME] [--max_memory LIST] [--no_split LIST]";
  if (command_line.words.size() > 1)
    return usage_error("unexpected argument '" + command_line.words[1] + "': give one model; " + kShortUsage);

  const auto max_memory = flag("--max_memory", ""), no_split = flag("--no_split", "");
  const auto device_map = flag("--device_map", max_memory.empty() && no_split.empty() ? "" : "auto");
  if (!device_map.empty() && command_line.words.empty())
    return usage_error(
        "--device_map, --max_memory and --no_split place a model's weights: give the model (a "
        "safetensors file, index or folder) instead of --num_parameters; " +
        std::string(kShortUsage));
  const auto num_parameters_text = flag("--num_parameters", "");
  std::optional<std::uint64_t> num_parameters;
  std::string source;  // where the count comes from, when it was read from files
  if (!command_line.words.empty()) {
    if (!num_parameters_text.empty())
      return usage_error("give either a model or --num_parameters, not both; " + std::string(kShortUsage));
    const auto counted = count_safetensors_parameters(command_line.words.front());
    const auto* parameters = std::get_if<SafetensorsParameters>(&counted);
    const std::string error = parameters
                                  ? (parameters->count == 0 || parameters->count > kMaxParameters
                                         ? command_line.words.front() + " holds " + std::to_string(parameters->count) +
                                               " parameters; the estimate needs from 1 to 10^15"
                                         : "")
                                  : std::get<std::string>(counted);
    if (!error.empty()) {
      std::cerr << "acc estimate-memory: " << error << "\n";
      return 1;
    }
    num_parameters = parameters->count;
    source = " (" + command_line.words.front() + ", " + std::to_string(parameters->files) +
             (parameters->files == 1 ? " safetensors file)" : " safetensors files)");
  } else {
    if (num_parameters_text.empty())
      return usage_error(
          "give a model (a safetensors file, index or folder) or --num_parameters, the model's "
          "parameter count, such as 7B or 125000000");
    num_parameters = parse_parameter_count(num_parameters_text);
    if (!num_parameters)
      return usage_error("--num_parameters '" + num_parameters_text +
                         "' is not a parameter count from 1 to 10^15; give an integer such as 7000000000, or a "
                         "number with K, M, B or T such as 125M or 1.3B");
  }
  const auto dtype = flag("--dtype", "float32");
  if (dtype != "float32" && dtype != "bfloat16" && dtype != "float16")
    return usage_error("--dtype '" + dtype + "' is not one of float32, bfloat16, float16");
  const auto processes_text = flag("--num_processes", "1,2,4,8");
  const auto process_counts = parse_process_counts(processes_text);
  if (!process_counts)
    return usage_error("--num_processes '" + processes_text +
                       "' is not a list of process counts; give numbers from 1 to 9999999 separated by commas, "
                       "such as 1,2,8");
  const bool mixed = dtype != "float32";

  std::cout << "Memory per process to train " << *num_parameters << " parameters" << source << " in " << dtype
            << (mixed ? " mixed precision" : "") << " with Adam\n"
            << "(weights, gradients and Adam's state; activations and temporary buffers come on top; the weights "
            << "alone in " << dtype << ": " << human_bytes(*num_parameters * (mixed ? 2 : 4)) << ")\n\n";
  constexpr std::array<std::size_t, 6> widths = {18, 9, 12, 12, 12, 12};
  const auto row = [&](const std::array<std::string, 6>& cells) {
    std::string line = padded(cells[0], widths[0], true);
    for (std::size_t i = 1; i < cells.size(); ++i) line += "  " + padded(cells[i], widths[i], false);
    std::cout << line << "\n";
  };
  row({"strategy", "processes", "weights", "gradients", "Adam state", "total"});
  constexpr std::array<std::pair<Strategy, const char*>, 4> strategies = {
      {{Strategy::kDdp, "DDP"},
       {Strategy::kNoShard, "FSDP NO_SHARD"},
       {Strategy::kShardGradOp, "FSDP SHARD_GRAD_OP"},
       {Strategy::kFullShard, "FSDP FULL_SHARD"}}};
  for (const auto processes : *process_counts)
    for (const auto& [strategy, name] : strategies) {
      const auto bytes = footprint(strategy, *num_parameters, processes, mixed);
      row({strategy == Strategy::kDdp && processes == 1 ? "Single" : name, std::to_string(processes),
           human_bytes(bytes.weights), human_bytes(bytes.gradients), human_bytes(bytes.adam),
           human_bytes(bytes.total())});
    }
  if (device_map.empty()) return 0;

  std::cout << "\n" << std::flush;  // before the program's own output
  const auto program = find_companion_program(kDeviceMapProgram, "device map program");
  if (!program.error.empty()) {
    std::cerr << "acc estimate-memory: " << program.error << "\n";
    return kExitCannotExecute;
  }
  std::string error;
  const int exit_code = run_program({program.path, "estimate-memory", command_line.words.front(), device_map,
                                     max_memory, no_split, flag("--dtype", "")},
                                    error);
  if (exit_code < 0) {
    std::cerr << "acc estimate-memory: " << error << "\n";
    return kExitCannotExecute;
  }
  return exit_code;
}

}  // namespace acc::cli
