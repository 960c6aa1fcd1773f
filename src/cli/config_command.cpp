#include "config_command.hpp"

#include <acc/config/config.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/detail/files.hpp>

#include "launch.hpp"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <set>

namespace acc::cli {
namespace {

namespace fs = std::filesystem;

constexpr int kExitCannotWrite = 1;
constexpr int kDefaultPort = 29500;
constexpr int kDefaultMinNumParams = 100000000;  // Accelerate's default for SIZE_BASED_WRAP

struct MachineType {
  const char* answer;
  const char* distributed_type;
};

// The machine types acc::run's default combinations can run in this build (src/cli/CMakeLists.txt
// passes the backends it found): a config the program cannot instantiate is not offered.
std::vector<MachineType> built_machine_types() {
  std::vector<MachineType> types{{"no", "NO"}};
  if (ACC_HAS_GLOO) types.push_back({"multi-CPU", "MULTI_CPU"});
  if (ACC_HAS_NCCL) types.insert(types.end(), {{"multi-GPU", "MULTI_GPU"}, {"FSDP", "FSDP"}});
  return types;
}

// The mixed precisions with an autocast where the config trains: fp16 on GPUs, and on the CPU
// only from libtorch 2.0 on; fp8 on GPUs where the build has its kernels.
std::vector<std::string> built_precisions(bool trains_on_gpus) {
  if (trains_on_gpus && ACC_HAS_FP8) return {"no", "fp16", "bf16", "fp8"};
  if (trains_on_gpus || ACC_CPU_FP16_AUTOCAST) return {"no", "fp16", "bf16"};
  return {"no", "bf16"};
}

constexpr const char* kConfigUsage = R"(usage: acc config [--config_file PATH]
       acc config default [--config_file PATH] [--mixed_precision no|fp16|bf16]
       acc config --reference

acc config asks how training runs (one answer a line, so answers can be piped in; an empty answer
takes the default in brackets) and saves the answers as a YAML config with the keys and layout of
Python Accelerate's `accelerate config`.

acc config default saves a config for this machine without asking: one process per NVIDIA GPU
(MULTI_GPU when there are several), or one CPU process when there is none. It will not overwrite
an existing file.

acc config --reference prints the reference of every key (docs/config_reference.md's tables).

Only what this build can run is offered: multi-GPU and FSDP with NCCL, multi-CPU with Gloo, fp16
where it has an autocast.

The file goes to $HF_HOME/accelerate/default_config.yaml, else
$XDG_CACHE_HOME/huggingface/accelerate/default_config.yaml, else
~/.cache/huggingface/accelerate/default_config.yaml.

flags (--flag value and --flag=value both work):
  --config_file PATH       save the config to PATH instead
  --mixed_precision P      acc config default only: no (default), fp16 or bf16
  -h, --help               show this help
)";

std::string trimmed(const std::string& text) {
  const std::size_t first = text.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t\r") - first + 1);
}

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string joined;
  for (const std::string& item : items) joined += (joined.empty() ? "" : separator) + item;
  return joined;
}

// Keeps empty pieces, so that "0,,1" can be refused.
std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> pieces;
  std::size_t start = 0;
  for (std::size_t found; (found = text.find(separator, start)) != std::string::npos; start = found + 1)
    pieces.push_back(text.substr(start, found - start));
  pieces.push_back(text.substr(start));
  return pieces;
}

// Digits only, so that "+3", "3x" and "-1" are refused rather than read as numbers.
std::optional<int> parse_non_negative_int(const std::string& text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
    return std::nullopt;
  int value = 0;
  if (std::from_chars(text.data(), text.data() + text.size(), value).ec != std::errc()) return std::nullopt;
  return value;
}

// An IPv4 address, or a host name: dot-separated labels of letters, digits and inner hyphens.
bool is_host(const std::string& text) {
  in_addr address;
  if (inet_pton(AF_INET, text.c_str(), &address) == 1) return true;
  // Digits and dots only is a mistyped IPv4 address, such as 10.0.0.256, not a host name.
  if (text.empty() || text.size() > 253 || text.find_first_not_of("0123456789.") == std::string::npos) return false;
  const std::vector<std::string> labels = split(text, '.');
  return std::all_of(labels.begin(), labels.end(), [](const std::string& label) {
    return !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-' &&
           std::all_of(label.begin(), label.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
  });
}

// "all", or exactly `count` distinct GPU indices separated by commas: one GPU per process.
bool is_gpu_id_list(const std::string& text, int count) {
  if (text == "all") return true;
  const std::vector<std::string> ids = split(text, ',');
  std::set<int> distinct;
  for (const std::string& id : ids) {
    const auto index = parse_non_negative_int(id);
    if (!index) return false;
    distinct.insert(*index);
  }
  return distinct.size() == ids.size() && static_cast<int>(ids.size()) == count;
}

// Class names separated by commas, each possibly qualified (acc::Block, model.Block).
bool is_class_name_list(const std::string& text) {
  for (const std::string& name : split(text, ',')) {
    const bool valid = !name.empty() && (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') &&
                       std::all_of(name.begin(), name.end(),
                                   [](unsigned char c) { return std::isalnum(c) || c == '_' || c == ':' || c == '.'; });
    if (!valid) return false;
  }
  return true;
}

std::string gpu_ids_rule(int processes_per_machine) {
  std::vector<std::string> example;
  for (int index = 0; index < processes_per_machine; ++index) example.push_back(std::to_string(index));
  return "all, or " + std::to_string(processes_per_machine) + " distinct GPU ids separated by commas, such as " +
         join(example, ",");
}

// On a terminal, an invalid answer is asked again this many times at most, so that a stream of
// garbage cannot keep the questionnaire going; and no answer is longer than this (a stream with
// no line break, such as /dev/zero, must not fill the memory).
constexpr int kMaxInvalidAnswers = 5;
constexpr std::size_t kMaxAnswerLength = 4096;

// Thrown when the answers end (EOF) before the questionnaire does.
struct AnswersEnded {
  std::string question;
};

// Thrown for an invalid piped answer, or one too many on a terminal: nothing is saved.
struct AnswerRefused {
  std::string question;
  std::string answer;
  std::string rule;
};

struct Question {
  std::string text;
  std::string allowed;                        // shown in parentheses after the question
  std::string rule;                           // what an invalid answer is told
  std::optional<std::string> default_answer;  // what an empty answer stands for
};

class Questionnaire {
 public:
  // `on_terminal`: someone types the answers, and an invalid one is asked again. Answers piped in
  // are not: the next line was meant for the next question, so taking it would save a config
  // nobody asked for. They do not show on the terminal either, so the transcript repeats them.
  Questionnaire(std::istream& answers, std::ostream& transcript, bool on_terminal)
      : answers_(answers), transcript_(transcript), on_terminal_(on_terminal) {}

  std::string choose(const std::string& question, const std::vector<std::string>& choices,
                     const std::string& default_choice) {
    std::string chosen;
    ask({question, join(choices, "/"), "choose one of " + join(choices, ", "), default_choice},
        [&](const std::string& answer) {
          for (const std::string& choice : choices)
            if (lowercase(choice) == lowercase(answer)) chosen = choice;
          return !chosen.empty();
        });
    return chosen;
  }

  bool yes_no(const std::string& question, bool default_answer) {
    bool yes = false;
    ask({question, "yes/no", "answer yes or no", default_answer ? "yes" : "no"}, [&](const std::string& answer) {
      const std::string word = lowercase(answer);
      yes = word == "yes" || word == "y";
      return yes || word == "no" || word == "n";
    });
    return yes;
  }

  // `rule` says which integers are allowed, both in the question and to an invalid answer.
  int integer(const std::string& question, const std::string& rule, std::optional<int> default_value,
              const std::function<bool(int)>& allowed) {
    int value = 0;
    const auto default_answer = default_value ? std::optional(std::to_string(*default_value)) : std::nullopt;
    ask({question, rule, rule, default_answer}, [&](const std::string& answer) {
      const auto number = parse_non_negative_int(answer);
      if (!number || !allowed(*number)) return false;
      value = *number;
      return true;
    });
    return value;
  }

  std::string text(const Question& question, const std::function<bool(const std::string&)>& allowed) {
    std::string accepted;
    ask(question, [&](const std::string& answer) {
      accepted = answer;
      return allowed(answer);
    });
    return accepted;
  }

 private:
  // Asks until `accept` takes an answer; on a terminal, at most kMaxInvalidAnswers times again.
  void ask(const Question& question, const std::function<bool(const std::string&)>& accept) {
    const std::string prompt = question.text + " (" + question.allowed + ")" +
                               (question.default_answer ? " [" + *question.default_answer + "]" : "") + ": ";
    for (int invalid_answers = 0;; ++invalid_answers) {
      transcript_ << prompt << std::flush;
      std::string line;
      if (!read_line(line)) {
        transcript_ << '\n';
        throw AnswersEnded{question.text};
      }
      if (line.size() > kMaxAnswerLength)
        throw AnswerRefused{question.text, line.substr(0, 40) + "...",
                            "an answer is at most " + std::to_string(kMaxAnswerLength) + " characters"};
      std::string answer = trimmed(line);
      if (!on_terminal_) transcript_ << acc::detail::printable(answer) << '\n';
      if (answer.empty() && question.default_answer) answer = *question.default_answer;
      if (accept(answer)) return;
      if (!on_terminal_ || invalid_answers == kMaxInvalidAnswers)
        throw AnswerRefused{question.text, answer, question.rule};
      transcript_ << "Invalid answer '" << acc::detail::printable(answer) << "': " << question.rule << '\n';
    }
  }

  // One line without its line break, or false at the end of the answers; stops one character past
  // kMaxAnswerLength.
  bool read_line(std::string& line) {
    for (int c; (c = answers_.get()) != std::char_traits<char>::eof();) {
      if (c == '\n' || line.size() > kMaxAnswerLength) return true;
      line += static_cast<char>(c);
    }
    return !line.empty();
  }

  std::istream& answers_;
  std::ostream& transcript_;
  bool on_terminal_;
};

// num_machines, the multi-machine settings and num_processes, in Accelerate's order.
void ask_machines_and_processes(Questionnaire& ask, acc::Config& config, int default_processes_per_machine) {
  config.num_machines = ask.integer("How many machines will you use (more than 1 for multi-node training)?",
                                    "an integer >= 1", 1, [](int count) { return count >= 1; });
  if (config.num_machines > 1) {
    config.machine_rank = ask.integer("What is the rank of this machine?",
                                      "an integer from 0 to " + std::to_string(config.num_machines - 1), 0,
                                      [&](int rank) { return rank < config.num_machines; });
    config.main_process_ip =
        ask.text({"What is the IP address or host name of the machine of rank 0?", "an IPv4 address or host name",
                  "an IPv4 address or host name, such as 10.0.0.1 or node-0", std::nullopt},
                 is_host);
    config.main_process_port =
        ask.integer("Which port will the machine of rank 0 listen on?", "an integer from 1 to 65535", kDefaultPort,
                    [](int port) { return port >= 1 && port <= 65535; });
    config.same_network = ask.yes_no("Are all the machines on the same local network?", true);
    config.rdzv_backend = ask.choose("Which rendezvous backend will you use?", {"static", "c10d"}, "static");
  }
  const std::string processes_rule =
      config.num_machines == 1
          ? "an integer >= 1"
          : "a positive multiple of " + std::to_string(config.num_machines) + ", the number of machines";
  config.num_processes = ask.integer("How many processes will run in total, across all machines?", processes_rule,
                                     config.num_machines * default_processes_per_machine,
                                     [&](int count) { return count >= 1 && count % config.num_machines == 0; });
}

// The sharding policies acc::FSDP has (FullShard, ShardGradOp, NoShard).
void ask_fsdp_settings(Questionnaire& ask, acc::FsdpConfig& fsdp) {
  fsdp.sharding_strategy =
      ask.choose("Which sharding strategy should FSDP use?", {"FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD"}, "FULL_SHARD");
  fsdp.auto_wrap_policy =
      ask.choose("Which auto wrap policy should FSDP use?", {"TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"},
                 "TRANSFORMER_BASED_WRAP");
  if (fsdp.auto_wrap_policy == "TRANSFORMER_BASED_WRAP")
    fsdp.transformer_layer_cls_to_wrap = split(
        ask.text({"Which module classes should each be wrapped as an FSDP unit?", "class names separated by commas",
                  "class names separated by commas, such as Block or acc::Block", std::nullopt},
                 is_class_name_list),
        ',');
  if (fsdp.auto_wrap_policy == "SIZE_BASED_WRAP")
    fsdp.min_num_params = ask.integer("How many parameters should an FSDP unit have at least?", "an integer >= 0",
                                      kDefaultMinNumParams, [](int) { return true; });
  fsdp.backward_prefetch = ask.choose("Which backward prefetch policy should FSDP use?",
                                      {"BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"}, "BACKWARD_PRE");
  fsdp.state_dict_type = ask.choose("Which state dict type should checkpoints use?",
                                    {"FULL_STATE_DICT", "SHARDED_STATE_DICT"}, "FULL_STATE_DICT");
  fsdp.offload_params = ask.yes_no("Do you want to offload parameters and gradients to the CPU?", false);
}

acc::Config ask_for_config(Questionnaire& ask, int gpus_on_this_machine) {
  acc::Config config;
  const std::vector<MachineType> types = built_machine_types();
  std::vector<std::string> machine_answers;
  for (const MachineType& type : types) machine_answers.emplace_back(type.answer);
  const std::string machine = ask.choose("Which type of machine are you using?", machine_answers, "no");
  for (const MachineType& type : types)
    if (machine == type.answer) config.distributed_type = type.distributed_type;

  const bool uses_gpus = config.distributed_type == "MULTI_GPU" || config.distributed_type == "FSDP";
  if (config.distributed_type == "NO") {
    config.use_cpu = ask.yes_no("Do you want to run on CPU only (even if a GPU is available)?", false);
  } else {
    config.use_cpu = config.distributed_type == "MULTI_CPU";
    ask_machines_and_processes(ask, config, uses_gpus ? std::max(gpus_on_this_machine, 1) : 1);
  }
  if (uses_gpus) {
    const int processes_per_machine = config.num_processes / config.num_machines;
    config.gpu_ids = ask.text({"Which GPUs of this machine should be used?", gpu_ids_rule(processes_per_machine),
                               gpu_ids_rule(processes_per_machine), "all"},
                              [&](const std::string& answer) { return is_gpu_id_list(answer, processes_per_machine); });
  }
  if (config.distributed_type == "FSDP") ask_fsdp_settings(ask, config.fsdp);
  const bool trains_on_gpus = uses_gpus || (!config.use_cpu && gpus_on_this_machine > 0);
  config.mixed_precision = ask.choose("Do you wish to use mixed precision?", built_precisions(trains_on_gpus), "no");
  config.gradient_accumulation_steps = ask.integer("How many gradient accumulation steps will you use?",
                                                   "an integer >= 1", 1, [](int steps) { return steps >= 1; });
  return config;
}

// `acc config default`: one process per GPU, or a single CPU process when there is no GPU.
acc::Config config_for_this_machine(int gpus_on_this_machine, const std::string& mixed_precision) {
  acc::Config config;
  if (gpus_on_this_machine > 1 && ACC_HAS_NCCL) {
    config.distributed_type = "MULTI_GPU";
    config.num_processes = gpus_on_this_machine;
    config.gpu_ids = "all";
  }
  config.use_cpu = gpus_on_this_machine == 0;
  config.mixed_precision = mixed_precision;
  return config;
}

// Writes `yaml` to a new file beside the config and renames it into place: a reader sees the old
// config or the new one, never half of one, and a crash leaves the old. A symlinked config (kept
// with dotfiles, say) is written where the link points, and a config's permissions are kept.
std::optional<std::string> write_config_file(const fs::path& path, const std::string& yaml) {
  std::error_code error;
  const bool linked = fs::is_symlink(fs::symlink_status(path, error));  // a missing path is no link
  const fs::path target = linked ? fs::weakly_canonical(path, error) : path;
  if (linked && error) return "cannot follow the link " + path.string() + ": " + error.message();
  error.clear();
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), error);
  if (error) return "cannot create " + target.parent_path().string() + ": " + error.message();
  struct stat replaced {};
  const bool replacing = ::stat(target.c_str(), &replaced) == 0;
  const mode_t mask = ::umask(0);  // read it: umask can only be read by setting it
  ::umask(mask);
  const mode_t mode = replacing ? (replaced.st_mode & 07777) : (0666 & ~mask);

  std::string staged = target.string() + ".XXXXXX";
  const int fd = ::mkstemp(staged.data());
  if (fd < 0) return "cannot create a file beside " + target.string() + ": " + std::strerror(errno);
  ::close(fd);
  try {
    acc::detail::write_synced(staged, yaml);
    if (::chmod(staged.c_str(), mode) != 0)
      throw acc::Error("cannot set the permissions of " + staged + ": " + std::strerror(errno));
    if (::rename(staged.c_str(), target.c_str()) != 0)
      throw acc::Error("cannot write " + target.string() + ": " + std::strerror(errno));
    acc::detail::fsync_path(acc::detail::parent_directory(target));  // the rename itself
  } catch (const acc::Error& e) {
    ::unlink(staged.c_str());
    return e.what();
  }
  return std::nullopt;
}

int save(const fs::path& path, const acc::Config& config, const std::string& command) {
  if (auto error = write_config_file(path, config.to_yaml())) {
    std::cerr << command << ": " << *error << "\n";
    return kExitCannotWrite;
  }
  std::cout << "accelerate-cpp configuration saved at " << path.string() << "\n";
  return 0;
}

int usage_error(const std::string& command, const std::string& message) {
  std::cerr << command << ": " << message << "\n";
  return kExitUsage;
}

}  // namespace

std::variant<CommandLine, UsageError> parse_command_line(const std::vector<std::string>& arguments,
                                                         const std::vector<std::string>& value_flags) {
  CommandLine command_line;
  for (std::size_t index = 0; index < arguments.size(); ++index) {
    const std::string& argument = arguments[index];
    if (argument == "-h" || argument == "--help") {
      command_line.help = true;
      return command_line;
    }
    if (argument.size() < 2 || argument[0] != '-') {
      command_line.words.push_back(argument);
      continue;
    }
    const std::size_t equals = argument.find('=');
    const std::string name = argument.substr(0, equals);
    if (std::find(value_flags.begin(), value_flags.end(), name) == value_flags.end())
      return UsageError{"unknown flag " + name + "; valid flags: -h/--help, " + join(value_flags, ", ")};
    std::string value;
    if (equals != std::string::npos)
      value = argument.substr(equals + 1);
    else if (index + 1 < arguments.size() && arguments[index + 1].rfind("--", 0) != 0)
      value = arguments[++index];
    if (value.empty()) return UsageError{name + " needs a value"};
    command_line.flag_values[name] = value;
  }
  return command_line;
}

int config_command(const std::vector<std::string>& arguments) {
  if (arguments == std::vector<std::string>{"--reference"}) {
    std::cout << acc::config_reference();
    return 0;
  }
  const auto parsed = parse_command_line(arguments, {"--config_file", "--mixed_precision"});
  if (const auto* error = std::get_if<UsageError>(&parsed)) return usage_error("acc config", error->message);
  const CommandLine& command_line = std::get<CommandLine>(parsed);
  if (command_line.help) {
    std::cout << kConfigUsage;
    return 0;
  }
  const std::vector<std::string>& words = command_line.words;
  const bool write_defaults = words.size() == 1 && words.front() == "default";
  if (!words.empty() && !write_defaults)
    return usage_error("acc config", "unexpected argument '" + words.back() + "'; usage: acc config [default] [flags]");

  const auto config_file = command_line.flag_values.find("--config_file");
  const fs::path path =
      config_file != command_line.flag_values.end() ? fs::path(config_file->second) : acc::default_config_file();
  const auto mixed_precision = command_line.flag_values.find("--mixed_precision");
  const bool mixed_precision_given = mixed_precision != command_line.flag_values.end();

  if (!write_defaults) {
    if (mixed_precision_given)
      return usage_error("acc config", "--mixed_precision works only with acc config default; the questions ask it");
    const bool on_terminal = isatty(STDIN_FILENO);
    Questionnaire questionnaire(std::cin, std::cout, on_terminal);
    try {
      return save(path, ask_for_config(questionnaire, count_nvidia_gpus()), "acc config");
    } catch (const AnswersEnded& ended) {
      return usage_error("acc config", "the answers ended before the question '" + ended.question +
                                           "' was answered; nothing was saved");
    } catch (const AnswerRefused& refused) {
      return usage_error("acc config",
                         "invalid answer '" + acc::detail::printable(refused.answer) + "' to '" + refused.question +
                             "': " + refused.rule + "; nothing was saved" +
                             (on_terminal ? " (" + std::to_string(kMaxInvalidAnswers + 1) + " invalid answers in a row)"
                                          : " (piped answers are not asked again)"));
    }
  }

  const std::string precision = mixed_precision_given ? mixed_precision->second : "no";
  const int gpus = count_nvidia_gpus();
  const std::vector<std::string> precisions = built_precisions(gpus > 0);
  if (std::find(precisions.begin(), precisions.end(), precision) == precisions.end())
    return usage_error("acc config default", "--mixed_precision '" + precision + "' is not valid " +
                                                 (gpus > 0 ? "" : "on this machine's CPU ") + "in this build; use " +
                                                 join(precisions, ", "));
  if (fs::exists(path))
    return usage_error("acc config default",
                       path.string() + " already exists, will not override it; remove it or pass --config_file");
  return save(path, config_for_this_machine(gpus, precision), "acc config default");
}

}  // namespace acc::cli
