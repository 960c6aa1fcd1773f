// `acc config` and `acc env` end to end: the real binary, with HOME, HF_HOME and XDG_CACHE_HOME in a
// fresh temporary folder and the questionnaire's answers piped into its stdin.
#include "launcher_process.hpp"

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The keys of every config acc config writes, whatever the answers, as Accelerate writes them.
const std::set<std::string> kCommonKeys = {"compute_environment",
                                           "debug",
                                           "distributed_type",
                                           "downcast_bf16",
                                           "fsdp_config",
                                           "gradient_accumulation_steps",
                                           "machine_rank",
                                           "main_training_function",
                                           "mixed_precision",
                                           "num_machines",
                                           "num_processes",
                                           "rdzv_backend",
                                           "same_network",
                                           "tpu_env",
                                           "tpu_use_cluster",
                                           "tpu_use_sudo",
                                           "use_cpu"};

// What this build offers (src/cli/CMakeLists.txt passes the same to acc): the machine types whose
// strategies acc::run has, and the mixed precisions of a CPU run.
const std::string kMachineTypes =
    std::string("no") + (ACC_HAS_GLOO ? "/multi-CPU" : "") + (ACC_HAS_NCCL ? "/multi-GPU/FSDP" : "");
const std::string kCpuPrecisions = ACC_CPU_FP16_AUTOCAST ? "no, fp16, bf16" : "no, bf16";

std::string with_commas(std::string choices) {
  for (std::size_t slash; (slash = choices.find('/')) != std::string::npos;) choices.replace(slash, 1, ", ");
  return choices;
}

std::set<std::string> keys_of(const YAML::Node& mapping) {
  std::set<std::string> keys;
  for (const auto& entry : mapping) keys.insert(entry.first.as<std::string>());
  return keys;
}

std::string contents_of(const fs::path& path) {
  std::ifstream file(path);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

int gpus_on_this_machine() {
  std::error_code error;
  const fs::directory_iterator gpus("/proc/driver/nvidia/gpus", error);
  return error ? 0 : static_cast<int>(std::distance(gpus, fs::directory_iterator()));
}

// Sets or unsets variables of this test process, which acc inherits, until it goes out of scope.
class ScopedEnvironment {
 public:
  ScopedEnvironment() = default;
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;
  ~ScopedEnvironment() {
    for (auto saved = saved_.rbegin(); saved != saved_.rend(); ++saved) apply(saved->first, saved->second);
  }

  void set(const std::string& name, const std::optional<std::string>& value) {
    const char* before = std::getenv(name.c_str());
    saved_.emplace_back(name, before ? std::optional<std::string>(before) : std::nullopt);
    apply(name, value);
  }

 private:
  static void apply(const std::string& name, const std::optional<std::string>& value) {
    if (value)
      setenv(name.c_str(), value->c_str(), 1);
    else
      unsetenv(name.c_str());
  }

  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// A fresh folder, removed afterwards, holding HOME and HF_HOME; XDG_CACHE_HOME is unset.
class TemporaryHome {
 public:
  TemporaryHome() {
    char pattern[] = "/tmp/acc_config_test_XXXXXX";
    REQUIRE(mkdtemp(pattern) != nullptr);
    folder_ = pattern;
    environment_.set("HOME", (folder_ / "home").string());
    environment_.set("HF_HOME", (folder_ / "hf").string());
    environment_.set("XDG_CACHE_HOME", std::nullopt);
  }
  TemporaryHome(const TemporaryHome&) = delete;
  TemporaryHome& operator=(const TemporaryHome&) = delete;
  ~TemporaryHome() {
    std::error_code error;
    fs::remove_all(folder_, error);
  }

  const fs::path& folder() const { return folder_; }
  fs::path hf_home_config() const { return folder_ / "hf" / "accelerate" / "default_config.yaml"; }
  ScopedEnvironment& environment() { return environment_; }

 private:
  fs::path folder_;
  ScopedEnvironment environment_;
};

// For one run, this process's stdin (which acc inherits) is a pipe holding `text` and then its end.
class StdinFromText {
 public:
  explicit StdinFromText(const std::string& text) : saved_stdin_(fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0)) {
    int pipe_ends[2];
    REQUIRE(pipe2(pipe_ends, O_CLOEXEC) == 0);
    // Answers are far below the pipe's 64 KiB, so writing them all before acc starts cannot block.
    REQUIRE(write(pipe_ends[1], text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(pipe_ends[1]);
    dup2(pipe_ends[0], STDIN_FILENO);
    close(pipe_ends[0]);
  }
  StdinFromText(const StdinFromText&) = delete;
  StdinFromText& operator=(const StdinFromText&) = delete;
  ~StdinFromText() {
    if (saved_stdin_ < 0) {
      close(STDIN_FILENO);  // it was closed before
      return;
    }
    dup2(saved_stdin_, STDIN_FILENO);
    close(saved_stdin_);
  }

 private:
  int saved_stdin_;
};

// For one run, this process's stdin (which acc inherits) is a pseudo-terminal on which `text` has
// been typed, as a person at a terminal answers (without echo, so that nothing waits on the echo).
class StdinFromTerminal {
 public:
  explicit StdinFromTerminal(const std::string& text) : saved_stdin_(fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0)) {
    controller_ = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(controller_ >= 0);
    REQUIRE(grantpt(controller_) == 0);
    REQUIRE(unlockpt(controller_) == 0);
    const int terminal = open(ptsname(controller_), O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(terminal >= 0);
    termios settings{};
    REQUIRE(tcgetattr(terminal, &settings) == 0);
    settings.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    REQUIRE(tcsetattr(terminal, TCSANOW, &settings) == 0);
    // Typed answers are far below the terminal's 4 KiB line buffer, so writing them cannot block.
    REQUIRE(write(controller_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    dup2(terminal, STDIN_FILENO);
    close(terminal);
  }
  StdinFromTerminal(const StdinFromTerminal&) = delete;
  StdinFromTerminal& operator=(const StdinFromTerminal&) = delete;
  ~StdinFromTerminal() {
    if (saved_stdin_ < 0)
      close(STDIN_FILENO);
    else {
      dup2(saved_stdin_, STDIN_FILENO);
      close(saved_stdin_);
    }
    close(controller_);
  }

 private:
  int saved_stdin_;
  int controller_ = -1;
};

// Every run gets a stdin of its own, so that none can wait on the terminal the tests started from.
// The bound catches a run that hangs; 30 s because acc env starts acc_device_map, a libtorch
// program, which under the sanitizers beside a loaded ctest took 7 s.
LauncherResult run_acc_with_input(const std::vector<std::string>& arguments, const std::string& input = "",
                                  const std::vector<std::string>& environment = {}) {
  const StdinFromText stdin_holds_input(input);
  LauncherResult result = run_acc(arguments, environment, 30s);
  REQUIRE(result.finished_in_time);
  return result;
}

LauncherResult run_acc_on_terminal(const std::vector<std::string>& arguments, const std::string& typed) {
  const StdinFromTerminal stdin_is_a_terminal(typed);
  LauncherResult result = run_acc(arguments, {}, 10s);
  REQUIRE(result.finished_in_time);
  return result;
}

std::string saved_line(const fs::path& path) { return "accelerate-cpp configuration saved at " + path.string() + "\n"; }

}  // namespace

TEST_CASE("a piped questionnaire for 4 CPU processes on one machine saves exactly the answers" *
          doctest::skip(!ACC_HAS_GLOO)) {
  TemporaryHome home;
  // machine type, machines (empty: the default 1), processes, mixed precision, accumulation steps
  const LauncherResult result = run_acc_with_input({"config"}, "multi-CPU\n\n4\nbf16\n2\n");
  CHECK(result.exit_code == 0);
  CHECK(result.err == "");
  // Answers that do not show on a terminal are repeated after their question.
  CHECK(result.out.rfind("Which type of machine are you using? (" + kMachineTypes + ") [no]: multi-CPU\n", 0) == 0);
  CHECK(lines_of(result.out).back() + "\n" == saved_line(home.hf_home_config()));

  // Accelerate's layout: sorted keys, 'no' quoted, an empty fsdp_config and tpu_env on one line.
  CHECK(contents_of(home.hf_home_config()) ==
        "compute_environment: LOCAL_MACHINE\n"
        "debug: false\n"
        "distributed_type: MULTI_CPU\n"
        "downcast_bf16: 'no'\n"
        "fsdp_config: {}\n"
        "gradient_accumulation_steps: 2\n"
        "machine_rank: 0\n"
        "main_training_function: main\n"
        "mixed_precision: bf16\n"
        "num_machines: 1\n"
        "num_processes: 4\n"
        "rdzv_backend: static\n"
        "same_network: true\n"
        "tpu_env: []\n"
        "tpu_use_cluster: false\n"
        "tpu_use_sudo: false\n"
        "use_cpu: true\n");

  const YAML::Node config = YAML::LoadFile(home.hf_home_config().string());
  CHECK(keys_of(config) == kCommonKeys);
  CHECK(config["distributed_type"].as<std::string>() == "MULTI_CPU");
  CHECK(config["num_machines"].as<int>() == 1);
  CHECK(config["num_processes"].as<int>() == 4);
  CHECK(config["mixed_precision"].as<std::string>() == "bf16");
  CHECK(config["gradient_accumulation_steps"].as<int>() == 2);
  CHECK(config["use_cpu"].as<bool>() == true);
  CHECK(config["downcast_bf16"].as<std::string>() == "no");
  CHECK(config["fsdp_config"].IsMap());
  CHECK(config["fsdp_config"].size() == 0);
  CHECK(config["tpu_env"].IsSequence());
}

TEST_CASE("a piped questionnaire for FSDP on 2 machines saves the machine and FSDP keys" *
          doctest::skip(!ACC_HAS_NCCL)) {
  TemporaryHome home;
  const std::string answers =
      "FSDP\n"           // machine type
      "2\n"              // machines
      "1\n"              // this machine's rank
      "10.1.2.3\n"       // main_process_ip
      "\n"               // main_process_port: 29500
      "no\n"             // same_network
      "c10d\n"           // rdzv_backend
      "4\n"              // processes across both machines
      "0,1\n"            // gpu_ids
      "SHARD_GRAD_OP\n"  // sharding strategy
      "\n"               // auto wrap policy: TRANSFORMER_BASED_WRAP
      "acc::Block\n"     // classes to wrap
      "NO_PREFETCH\n"    // backward prefetch
      "SHARDED_STATE_DICT\n"
      "yes\n"  // offload parameters
      "fp16\n"
      "\n";  // accumulation steps: 1
  const LauncherResult result = run_acc_with_input({"config"}, answers);
  CHECK(result.exit_code == 0);
  CHECK(result.err == "");

  const YAML::Node config = YAML::LoadFile(home.hf_home_config().string());
  std::set<std::string> expected_keys = kCommonKeys;
  expected_keys.insert({"gpu_ids", "main_process_ip", "main_process_port"});
  CHECK(keys_of(config) == expected_keys);
  CHECK(config["distributed_type"].as<std::string>() == "FSDP");
  CHECK(config["num_machines"].as<int>() == 2);
  CHECK(config["machine_rank"].as<int>() == 1);
  CHECK(config["main_process_ip"].as<std::string>() == "10.1.2.3");
  CHECK(config["main_process_port"].as<int>() == 29500);
  CHECK(config["same_network"].as<bool>() == false);
  CHECK(config["rdzv_backend"].as<std::string>() == "c10d");
  CHECK(config["num_processes"].as<int>() == 4);
  CHECK(config["gpu_ids"].as<std::string>() == "0,1");
  CHECK(config["mixed_precision"].as<std::string>() == "fp16");
  CHECK(config["gradient_accumulation_steps"].as<int>() == 1);
  CHECK(config["use_cpu"].as<bool>() == false);

  const YAML::Node fsdp = config["fsdp_config"];
  // Every FSDP key, as Accelerate writes them, with the classes to wrap for TRANSFORMER_BASED_WRAP.
  CHECK(keys_of(fsdp) == std::set<std::string>{"fsdp_activation_checkpointing", "fsdp_auto_wrap_policy",
                                               "fsdp_backward_prefetch", "fsdp_cpu_ram_efficient_loading",
                                               "fsdp_forward_prefetch", "fsdp_offload_params", "fsdp_sharding_strategy",
                                               "fsdp_state_dict_type", "fsdp_sync_module_states",
                                               "fsdp_transformer_layer_cls_to_wrap", "fsdp_use_orig_params"});
  CHECK(fsdp["fsdp_sharding_strategy"].as<std::string>() == "SHARD_GRAD_OP");
  CHECK(fsdp["fsdp_auto_wrap_policy"].as<std::string>() == "TRANSFORMER_BASED_WRAP");
  CHECK(fsdp["fsdp_transformer_layer_cls_to_wrap"].as<std::string>() == "acc::Block");
  CHECK(fsdp["fsdp_backward_prefetch"].as<std::string>() == "NO_PREFETCH");
  CHECK(fsdp["fsdp_state_dict_type"].as<std::string>() == "SHARDED_STATE_DICT");
  CHECK(fsdp["fsdp_offload_params"].as<bool>() == true);
}

TEST_CASE("SIZE_BASED_WRAP asks for fsdp_min_num_params instead of the classes to wrap" *
          doctest::skip(!ACC_HAS_NCCL)) {
  TemporaryHome home;
  const LauncherResult result =
      run_acc_with_input({"config"}, "FSDP\n1\n2\nall\n\nSIZE_BASED_WRAP\n1000000\n\n\n\nbf16\n\n");
  CHECK(result.exit_code == 0);
  const YAML::Node fsdp = YAML::LoadFile(home.hf_home_config().string())["fsdp_config"];
  CHECK(fsdp["fsdp_auto_wrap_policy"].as<std::string>() == "SIZE_BASED_WRAP");
  CHECK(fsdp["fsdp_min_num_params"].as<int>() == 1000000);
  CHECK_FALSE(fsdp["fsdp_transformer_layer_cls_to_wrap"]);
}

TEST_CASE("without distributed training, acc config asks only whether to run on the CPU") {
  TemporaryHome home;
  const LauncherResult result = run_acc_with_input({"config"}, "no\nyes\n\n\n");
  CHECK(result.exit_code == 0);
  const YAML::Node config = YAML::LoadFile(home.hf_home_config().string());
  CHECK(keys_of(config) == kCommonKeys);
  CHECK(config["distributed_type"].as<std::string>() == "NO");
  CHECK(config["use_cpu"].as<bool>() == true);
  CHECK(config["num_processes"].as<int>() == 1);
  CHECK(config["num_machines"].as<int>() == 1);
  CHECK(config["mixed_precision"].as<std::string>() == "no");
  // PyYAML would read a plain NO as false, so Accelerate writes it quoted.
  CHECK(contents_of(home.hf_home_config()).find("distributed_type: 'NO'\n") != std::string::npos);
}

TEST_CASE("on a terminal, an invalid answer is refused with the rule and the question asked again" *
          doctest::skip(!ACC_HAS_GLOO)) {
  TemporaryHome home;
  const LauncherResult result = run_acc_on_terminal({"config"}, "multi-cpu\n0\n1\nthree\n3\nfp8\nbf16\n-1\n\n");
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("Invalid answer '0': an integer >= 1\n") != std::string::npos);
  CHECK(result.out.find("Invalid answer 'three': an integer >= 1\n") != std::string::npos);
  CHECK(result.out.find("Invalid answer 'fp8': choose one of " + kCpuPrecisions + "\n") != std::string::npos);
  CHECK(result.out.find("Invalid answer '-1': an integer >= 1\n") != std::string::npos);
  int times_asked_for_precision = 0;
  for (const std::string& line : lines_of(result.out))
    if (line.find("Do you wish to use mixed precision?") != std::string::npos) ++times_asked_for_precision;
  CHECK(times_asked_for_precision == 2);

  const YAML::Node config = YAML::LoadFile(home.hf_home_config().string());
  CHECK(config["distributed_type"].as<std::string>() == "MULTI_CPU");  // "multi-cpu": any case is taken
  CHECK(config["num_processes"].as<int>() == 3);
  CHECK(config["mixed_precision"].as<std::string>() == "bf16");
  CHECK(config["gradient_accumulation_steps"].as<int>() == 1);
}

TEST_CASE("on a terminal, the sixth invalid answer in a row ends acc config with exit code 2 and no file") {
  TemporaryHome home;
  std::string typed;
  for (int i = 0; i < 10; ++i) typed += "garbage\n";
  const LauncherResult result = run_acc_on_terminal({"config"}, typed);
  CHECK(result.exit_code == 2);
  CHECK(result.err == "acc config: invalid answer 'garbage' to 'Which type of machine are you using?': choose one of " +
                          with_commas(kMachineTypes) + "; nothing was saved (6 invalid answers in a row)\n");
  int times_asked = 0;
  for (const std::string& line : lines_of(result.out))
    if (line.find("Which type of machine are you using?") != std::string::npos) ++times_asked;
  CHECK(times_asked == 6);
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

// Piped answers are one a line in order: taking the next line for a refused answer's question
// would save a config with every later answer shifted (found: exit 0 with a different config).
TEST_CASE("an invalid piped answer ends acc config with exit code 2, saves nothing and takes no other line" *
          doctest::skip(!ACC_HAS_GLOO)) {
  TemporaryHome home;
  // 'four' is refused; before, '2' was then taken as the number of processes and bf16 as the precision.
  const LauncherResult result = run_acc_with_input({"config"}, "multi-CPU\n\nfour\n2\nbf16\n\n");
  CHECK(result.exit_code == 2);
  CHECK(result.err ==
        "acc config: invalid answer 'four' to 'How many processes will run in total, across all machines?': an "
        "integer >= 1; nothing was saved (piped answers are not asked again)\n");
  CHECK(result.out.find("Do you wish to use mixed precision?") == std::string::npos);
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

// Found: `yes garbage | acc config` asked again forever (900 MB of output in 30 s).
TEST_CASE("piped garbage ends acc config at the first answer, with little output") {
  TemporaryHome home;
  std::string garbage;
  while (garbage.size() < 32 * 1024) garbage += "garbage\n";
  const LauncherResult result = run_acc_with_input({"config"}, garbage);
  CHECK(result.exit_code == 2);
  CHECK(result.err.find("acc config: invalid answer 'garbage' to 'Which type of machine are you using?'") == 0);
  CHECK(result.out.size() < 200);
  CHECK_FALSE(fs::exists(home.hf_home_config()));

  // An endless line (/dev/zero piped in) is cut off instead of filling the memory.
  const LauncherResult long_line = run_acc_with_input({"config"}, "no\n" + std::string(20000, 'x'));
  CHECK(long_line.exit_code == 2);
  CHECK(long_line.err.find("acc config: invalid answer 'xxxxxxxx") == 0);
  CHECK(long_line.err.find("an answer is at most 4096 characters; nothing was saved") != std::string::npos);
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

TEST_CASE("answers that end before the questionnaire does give exit code 2 and no file") {
  TemporaryHome home;
  const LauncherResult result = run_acc_with_input({"config"}, ACC_HAS_GLOO ? "multi-CPU\n1\n" : "multi-GPU\n1\n");
  CHECK(result.exit_code == 2);
  CHECK(result.err ==
        "acc config: the answers ended before the question 'How many processes will run in total, across all "
        "machines?' was answered; nothing was saved\n");
  CHECK_FALSE(fs::exists(home.hf_home_config()));
  CHECK(run_acc_with_input({"config"}, "").exit_code == 2);
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

TEST_CASE("acc config default writes a config for this machine and will not overwrite it") {
  TemporaryHome home;
  const LauncherResult first = run_acc_with_input({"config", "default", "--mixed_precision", "bf16"});
  CHECK(first.exit_code == 0);
  CHECK(first.out == saved_line(home.hf_home_config()));

  const YAML::Node config = YAML::LoadFile(home.hf_home_config().string());
  const int gpus = gpus_on_this_machine();
  CAPTURE(gpus);
  const bool multi_gpu = gpus > 1 && ACC_HAS_NCCL;
  CHECK(config["distributed_type"].as<std::string>() == (multi_gpu ? "MULTI_GPU" : "NO"));
  CHECK(config["num_processes"].as<int>() == (multi_gpu ? gpus : 1));
  CHECK(config["use_cpu"].as<bool>() == (gpus == 0));
  CHECK(config["mixed_precision"].as<std::string>() == "bf16");
  CHECK(config["num_machines"].as<int>() == 1);
  std::set<std::string> expected_keys = kCommonKeys;
  if (multi_gpu) expected_keys.insert("gpu_ids");
  CHECK(keys_of(config) == expected_keys);

  const std::string written = contents_of(home.hf_home_config());
  const LauncherResult second = run_acc_with_input({"config", "default"});
  CHECK(second.exit_code == 2);
  CHECK(second.out == "");
  CHECK(second.err == "acc config default: " + home.hf_home_config().string() +
                          " already exists, will not override it; remove it or pass --config_file\n");
  CHECK(contents_of(home.hf_home_config()) == written);
}

TEST_CASE("--config_file saves the config there and nowhere else" * doctest::skip(!ACC_HAS_GLOO)) {
  TemporaryHome home;
  const fs::path elsewhere = home.folder() / "new" / "folders" / "my config.yaml";
  const LauncherResult questionnaire =
      run_acc_with_input({"config", "--config_file", elsewhere.string()}, "multi-CPU\n\n2\n\n\n");
  CHECK(questionnaire.exit_code == 0);
  CHECK(lines_of(questionnaire.out).back() + "\n" == saved_line(elsewhere));
  CHECK(YAML::LoadFile(elsewhere.string())["num_processes"].as<int>() == 2);
  CHECK_FALSE(fs::exists(home.hf_home_config()));

  const fs::path defaults = home.folder() / "defaults.yaml";
  CHECK(run_acc_with_input({"config", "default", "--config_file=" + defaults.string()}).exit_code == 0);
  CHECK(fs::exists(defaults));
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

// Found: a symlinked config was replaced by a plain file (the file it named kept the old
// settings), and a private config became readable by everyone.
TEST_CASE("acc config writes a symlinked config where the link points and keeps the file's permissions") {
  TemporaryHome home;
  const fs::path real = home.folder() / "dotfiles" / "accelerate.yaml";
  const fs::path link = home.folder() / "link.yaml";
  fs::create_directories(real.parent_path());
  std::ofstream(real) << "mixed_precision: bf16\n";
  const auto private_file = fs::perms::owner_read | fs::perms::owner_write;
  fs::permissions(real, private_file);
  fs::create_symlink(real, link);
  const LauncherResult saved = run_acc_with_input({"config", "--config_file", link.string()}, "no\nyes\n\n\n");
  CHECK(saved.exit_code == 0);
  CHECK(fs::is_symlink(link));
  const YAML::Node config = YAML::LoadFile(real.string());
  CHECK(config["use_cpu"].as<bool>() == true);
  CHECK(config["mixed_precision"].as<std::string>() == "no");
  CHECK((fs::status(real).permissions() & fs::perms::all) == private_file);
  // The staged file was renamed into place: nothing else is left beside it.
  CHECK(std::distance(fs::directory_iterator(real.parent_path()), fs::directory_iterator()) == 1);
}

TEST_CASE("the default config path follows HF_HOME, then XDG_CACHE_HOME, then HOME") {
  TemporaryHome home;
  const fs::path xdg_config = home.folder() / "xdg" / "huggingface" / "accelerate" / "default_config.yaml";
  const fs::path home_config = home.folder() / "home" / ".cache" / "huggingface" / "accelerate" / "default_config.yaml";
  home.environment().set("XDG_CACHE_HOME", (home.folder() / "xdg").string());

  CHECK(run_acc_with_input({"config", "default"}).out == saved_line(home.hf_home_config()));
  CHECK(fs::exists(home.hf_home_config()));

  home.environment().set("HF_HOME", "");  // empty counts as unset
  CHECK(run_acc_with_input({"config", "default"}).out == saved_line(xdg_config));
  CHECK(fs::exists(xdg_config));

  home.environment().set("XDG_CACHE_HOME", std::nullopt);
  CHECK(run_acc_with_input({"config", "default"}).out == saved_line(home_config));
  CHECK(fs::exists(home_config));

  // A leading ~ is the home folder, as Python's expanduser makes it for Accelerate.
  home.environment().set("HF_HOME", "~/hf_under_home");
  const fs::path tilde_config = home.folder() / "home" / "hf_under_home" / "accelerate" / "default_config.yaml";
  CHECK(run_acc_with_input({"config", "default"}).out == saved_line(tilde_config));
  CHECK(fs::exists(tilde_config));
}

TEST_CASE("acc env prints every key, and the active config once there is one") {
  TemporaryHome home;
  const std::vector<std::string> keys = {"accelerate-cpp version",
                                         "Platform",
                                         "Compiler",
                                         "libtorch version the tool was built against",
                                         "CUDA driver",
                                         "GPUs",
                                         "NCCL",
                                         "Gloo",
                                         "CPU cores",
                                         "Free memory for device maps",
                                         "Config file",
                                         "Environment overrides",
                                         "Active config"};
  const LauncherResult before = run_acc_with_input({"env"});
  CHECK(before.exit_code == 0);
  CHECK(before.err == "");
  for (const std::string& key : keys) {
    CAPTURE(key);
    CHECK(before.out.find("\n- " + key + ":") != std::string::npos);
  }
  CHECK(before.out.find("- accelerate-cpp version: " ACC_VERSION_STRING "\n") != std::string::npos);
  CHECK(before.out.find("- GPUs: " + std::to_string(gpus_on_this_machine())) != std::string::npos);
  CHECK(before.out.find("- Config file: " + home.hf_home_config().string() + " (not found)\n") != std::string::npos);
  CHECK(lines_of(before.out).back() == "- Active config: not found");

  REQUIRE(run_acc_with_input({"config", "default"}).exit_code == 0);
  const LauncherResult after = run_acc_with_input({"env"});
  CHECK(after.exit_code == 0);
  CHECK(after.out.find("- Config file: " + home.hf_home_config().string() + " (exists)\n") != std::string::npos);
  std::string indented_config;
  for (const std::string& line : lines_of(contents_of(home.hf_home_config()))) indented_config += "  " + line + "\n";
  const std::string active_config = "- Active config:\n" + indented_config;
  REQUIRE(after.out.size() >= active_config.size());
  CHECK(after.out.substr(after.out.size() - active_config.size()) == active_config);
}

TEST_CASE("acc config and acc env print their usage for -h and refuse bad arguments with exit code 2") {
  TemporaryHome home;
  const LauncherResult config_help = run_acc_with_input({"config", "-h"});
  CHECK(config_help.exit_code == 0);
  CHECK(config_help.out.rfind("usage: acc config [--config_file PATH]\n", 0) == 0);
  const LauncherResult env_help = run_acc_with_input({"env", "--help"});
  CHECK(env_help.exit_code == 0);
  CHECK(env_help.out.rfind("usage: acc env [--config_file PATH] [--model MODEL]\n", 0) == 0);

  for (const std::vector<std::string>& arguments :
       std::vector<std::vector<std::string>>{{"config", "bogus"},
                                             {"config", "--frobnicate"},
                                             {"config", "--config_file"},
                                             {"config", "--mixed_precision", "fp16"},  // the questionnaire asks it
                                             {"config", "default", "--mixed_precision", "fp8"},
                                             {"env", "extra"},
                                             {"env", "--model"},
                                             {"env", "--mixed_precision", "fp16"}}) {
    CAPTURE(arguments.back());
    const LauncherResult result = run_acc_with_input(arguments);
    CHECK(result.exit_code == 2);
    CHECK(lines_of(result.err).size() == 1);
  }
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

TEST_CASE("acc launch uses the file a piped acc config wrote" * doctest::skip(!ACC_HAS_GLOO)) {
  TemporaryHome home;
  REQUIRE(run_acc_with_input({"config"}, "multi-CPU\n\n3\nbf16\n\n").exit_code == 0);
  const LauncherResult launched = run_acc_with_input({"launch", PROBE_BIN, "env"});
  CHECK(launched.exit_code == 0);
  const auto ranks = environments_by_rank(launched.out);
  CHECK(ranks.size() == 3);
  for (const auto& [rank, variables] : ranks) {
    CAPTURE(rank);
    CHECK(variables.at("WORLD_SIZE") == "3");
    CHECK(variables.at("ACCELERATE_USE_CPU") == "true");
    CHECK(variables.at("ACCELERATE_MIXED_PRECISION") == "bf16");
    CHECK(variables.at("ACC_DISTRIBUTED_TYPE") == "MULTI_CPU");
    CHECK(variables.at("ACC_CONFIG_FILE") == home.hf_home_config().string());
  }
}

// Found: acc launch read the default file while its ranks and acc env read ACC_CONFIG_FILE's.
TEST_CASE("acc launch applies the file ACC_CONFIG_FILE names, which acc env shows and the ranks read" *
          doctest::skip(!ACC_HAS_GLOO)) {
  TemporaryHome home;
  REQUIRE(run_acc_with_input({"config", "default"}).exit_code == 0);  // a default file that must lose
  const fs::path named = home.folder() / "named.yaml";
  std::ofstream(named) << "distributed_type: MULTI_CPU\nnum_processes: 2\nmixed_precision: bf16\nuse_cpu: true\n";
  const std::string variable = "ACC_CONFIG_FILE=" + named.string();
  const LauncherResult launched = run_acc_with_input({"launch", PROBE_BIN, "env"}, "", {variable});
  CHECK(launched.exit_code == 0);
  const auto ranks = environments_by_rank(launched.out);
  CHECK(ranks.size() == 2);
  for (const auto& [rank, variables] : ranks) {
    CAPTURE(rank);
    CHECK(variables.at("WORLD_SIZE") == "2");
    CHECK(variables.at("ACCELERATE_MIXED_PRECISION") == "bf16");
    CHECK(variables.at("ACC_CONFIG_FILE") == named.string());
  }
  CHECK(run_acc_with_input({"env"}, "", {variable}).out.find("- Config file: " + named.string() + " (exists)\n") !=
        std::string::npos);
  // A named file that is missing is an error for acc launch too, not a fall back to the default.
  const std::string missing = (home.folder() / "missing.yaml").string();
  const LauncherResult refused = run_acc_with_input({"launch", PROBE_BIN, "env"}, "", {"ACC_CONFIG_FILE=" + missing});
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find(missing) != std::string::npos);
  CHECK(refused.out.find("env ") == std::string::npos);
}

// Found: acc env ignored ACC_CONFIG_FILE and printed a junk file's raw bytes.
TEST_CASE("acc env reads the file ACC_CONFIG_FILE names through the loader and reports a bad one with exit code 1") {
  TemporaryHome home;
  const fs::path named = home.folder() / "named.yaml";
  std::ofstream(named) << "mixed_precision: bf16\n";
  const LauncherResult good = run_acc_with_input({"env"}, "", {"ACC_CONFIG_FILE=" + named.string()});
  CHECK(good.exit_code == 0);
  CHECK(good.out.find("- Config file: " + named.string() + " (exists)\n") != std::string::npos);
  // As the loader read it, written back by Config::to_yaml.
  CHECK(good.out.find("- Active config:\n  compute_environment: LOCAL_MACHINE\n") != std::string::npos);
  CHECK(good.out.find("\n  mixed_precision: bf16\n") != std::string::npos);

  const fs::path junk = home.folder() / "junk.yaml";
  const char junk_bytes[] = "\x89PNG\r\n\x1a\n\x00\x01\xff: 1\n";  // with a NUL inside: sizeof, not strlen
  std::ofstream(junk, std::ios::binary) << std::string(junk_bytes, sizeof junk_bytes - 1);
  const LauncherResult bad = run_acc_with_input({"env"}, "", {"ACC_CONFIG_FILE=" + junk.string()});
  CHECK(bad.exit_code == 1);
  CHECK(bad.out.find("- Active config: cannot be used: " + junk.string() + ":") != std::string::npos);
  CHECK(bad.err.rfind("acc env: " + junk.string() + ":", 0) == 0);
  for (const std::string* text : {&bad.out, &bad.err})
    for (const char c : *text) {
      CAPTURE(static_cast<int>(static_cast<unsigned char>(c)));
      CHECK(((c >= 0x20 && c < 0x7f) || c == '\n'));
    }

  // --config_file wins over ACC_CONFIG_FILE, and a named file that is missing is an error too.
  const LauncherResult flag =
      run_acc_with_input({"env", "--config_file", named.string()}, "", {"ACC_CONFIG_FILE=" + junk.string()});
  CHECK(flag.exit_code == 0);
  const LauncherResult missing =
      run_acc_with_input({"env"}, "", {"ACC_CONFIG_FILE=" + (home.folder() / "missing.yaml").string()});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("cannot read the config file") != std::string::npos);
}

// Found: a directory was silently ignored, /dev/zero ended in bad_alloc, a FIFO hung, a repeated
// key silently took the last value.
TEST_CASE("acc launch and acc env refuse a config that is a directory, a device, a FIFO, too big or repeats a key") {
  TemporaryHome home;
  const fs::path fifo = home.folder() / "fifo.yaml";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  const fs::path big = home.folder() / "big.yaml";
  std::ofstream(big) << "# " << std::string(1 << 20, 'x') << "\nnum_processes: 2\n";
  const fs::path repeated = home.folder() / "repeated.yaml";
  std::ofstream(repeated) << "num_processes: 2\nuse_cpu: true\nnum_processes: 3\n";
  const std::vector<std::pair<fs::path, std::string>> cases = {
      {home.folder(), "the config file " + home.folder().string() + " is a directory; name a YAML file"},
      {"/dev/zero", "the config file /dev/zero is a character device, not a regular file; name a YAML file"},
      {fifo, "the config file " + fifo.string() + " is a FIFO (named pipe), not a regular file; name a YAML file"},
      {big, "the config file " + big.string() + " is 1048596 bytes; a config file is at most 1048576 bytes (1 MiB)"},
      {repeated, repeated.string() + ":3: 'num_processes' is given twice, on lines 1 and 3; keep one of them"}};
  for (const auto& [path, message] : cases) {
    CAPTURE(path);
    const LauncherResult launched = run_acc_with_input({"launch", "--config_file", path.string(), PROBE_BIN, "env"});
    CHECK(launched.exit_code == 2);
    CHECK(launched.out == "");
    CHECK(launched.err.find("acc launch: " + message) == 0);
    CHECK(launched.seconds < 5);
    // Its run includes acc_device_map's start (above), so run_acc_with_input's bound is its hang check.
    const LauncherResult env = run_acc_with_input({"env", "--config_file", path.string()});
    CHECK(env.exit_code == 1);
    CHECK(env.err.find("acc env: " + message) == 0);
  }
}

TEST_CASE("the config reference in docs is what acc config --reference prints") {
  const LauncherResult reference = run_acc_with_input({"config", "--reference"});
  CHECK(reference.exit_code == 0);
  const std::string doc = contents_of(fs::path(ACC_SOURCE_DIR) / "docs" / "config_reference.md");
  const std::string begin = "<!-- generated by `acc config --reference`: do not edit between these lines -->\n";
  const std::string end = "<!-- end of the generated reference -->\n";
  const auto first = doc.find(begin);
  const auto last = doc.find(end);
  REQUIRE(first != std::string::npos);
  REQUIRE(last != std::string::npos);
  // When this fails: put the output of `acc config --reference` between the two lines.
  CHECK(doc.substr(first + begin.size(), last - first - begin.size()) == reference.out);
  for (const std::string key : {"`mixed_precision`", "`fsdp_offload_params`", "`collective_timeout`", "`tpu_env`"})
    CHECK(reference.out.find(key) != std::string::npos);
}

// Found: the questionnaire offered multi-GPU, FSDP and fp16 on a build that cannot run them.
TEST_CASE("the questionnaire offers only what this build runs") {
  TemporaryHome home;
  const LauncherResult machine = run_acc_with_input({"config"}, "\n");
  CHECK(machine.out.rfind("Which type of machine are you using? (" + kMachineTypes + ") [no]: ", 0) == 0);
  if (!ACC_HAS_NCCL) {
    const LauncherResult refused = run_acc_with_input({"config"}, "multi-GPU\n");
    CHECK(refused.exit_code == 2);
    CHECK(refused.err.find("invalid answer 'multi-GPU' to 'Which type of machine are you using?': choose one of " +
                           with_commas(kMachineTypes)) != std::string::npos);
  }
  if (gpus_on_this_machine() == 0) {
    // One CPU process: the precisions with a CPU autocast in this libtorch.
    const LauncherResult precision = run_acc_with_input({"config"}, "no\nyes\nfp16\n");
    CHECK(precision.out.find("Do you wish to use mixed precision? (" +
                             std::string(ACC_CPU_FP16_AUTOCAST ? "no/fp16/bf16" : "no/bf16") + ") [no]: ") !=
          std::string::npos);
    CHECK(precision.exit_code == 2);  // fp16 refused, or the answers end after it
    if (!ACC_CPU_FP16_AUTOCAST) {
      CHECK(precision.err.find("invalid answer 'fp16' to 'Do you wish to use mixed precision?'") != std::string::npos);
      const LauncherResult default_config = run_acc_with_input({"config", "default", "--mixed_precision", "fp16"});
      CHECK(default_config.exit_code == 2);
      CHECK(default_config.err ==
            "acc config default: --mixed_precision 'fp16' is not valid on this machine's CPU in this build; use no, "
            "bf16\n");
    }
  }
  CHECK_FALSE(fs::exists(home.hf_home_config()));
}

TEST_CASE("acc env --model shows the map device_map=\"auto\" makes in a program acc launch starts with the config") {
  TemporaryHome home;
  // One float32 tensor of 10 x 4 (160 bytes): a safetensors header, then its zero bytes.
  const fs::path model = home.folder() / "model.safetensors";
  const std::string header = R"({"layer.w":{"dtype":"F32","shape":[10,4],"data_offsets":[0,160]}})";
  {
    std::ofstream out(model, std::ios::binary);
    for (int byte = 0; byte < 8; ++byte) out.put(static_cast<char>((header.size() >> (8 * byte)) & 0xff));
    out << header << std::string(160, '\0');
  }
  const int gpus = gpus_on_this_machine();
  const std::string device = gpus > 0 ? "0" : "cpu";
  const std::string map_heading =
      "- Device map of " + model.string() +
      ":\n  Device map for inference: device_map=\"auto\" within what the devices have free (";
  const std::string placed = "\n  {'': " + (gpus > 0 ? device : "'cpu'") + "}\n    " + device + ": 160 bytes\n";

  // Without a config: every device of this machine, the model on the first GPU if there is one.
  const LauncherResult plain = run_acc_with_input({"env", "--model", model.string()});
  CHECK(plain.exit_code == 0);
  CHECK(plain.err == "");
  CHECK(plain.out.find(map_heading) != std::string::npos);
  CHECK(plain.out.find(placed) != std::string::npos);

  // gpu_ids: 0 leaves the program GPU 0 alone (CUDA_VISIBLE_DEVICES=0): its budgets name no second
  // GPU. Without GPUs acc launch refuses the config, and the map says so.
  const fs::path config = home.folder() / "gpu_0.yaml";
  std::ofstream(config) << "gpu_ids: '0'\n";
  const LauncherResult on_gpu_0 =
      run_acc_with_input({"env", "--config_file", config.string(), "--model", model.string()});
  if (gpus > 0) {
    CHECK(on_gpu_0.exit_code == 0);
    CHECK(on_gpu_0.out.find(map_heading + "0 ") != std::string::npos);
    CHECK(on_gpu_0.out.find(", 1 ") == std::string::npos);
    CHECK(on_gpu_0.out.find(placed) != std::string::npos);
  } else {
    CHECK(on_gpu_0.exit_code == 1);
    const std::string refusal = "acc launch would refuse this config: gpu_ids '0' in " + config.string() +
                                " names GPUs, but no CUDA device is present";
    CHECK(on_gpu_0.out.find("- Device map of " + model.string() + ": cannot be planned: " + refusal) !=
          std::string::npos);
    CHECK(on_gpu_0.err.find("acc env: " + refusal) != std::string::npos);
  }

  // A model that is not there: the loader's error, then what it cost, and exit code 1.
  const std::string missing = (home.folder() / "missing.safetensors").string();
  const LauncherResult absent = run_acc_with_input({"env", "--model", missing});
  CHECK(absent.exit_code == 1);
  CHECK(absent.out.find("- Device map of " + missing + ": cannot be planned: no device map for " + missing) !=
        std::string::npos);
  CHECK(absent.err.rfind("acc env: '" + missing + "' does not exist; give a .safetensors file", 0) == 0);
}

TEST_CASE("acc env lists the variables that override the config, and refuses a bad one") {
  TemporaryHome home;
  const LauncherResult none = run_acc_with_input({"env"});
  CHECK(none.out.find("- Environment overrides: none\n") != std::string::npos);
  const LauncherResult set =
      run_acc_with_input({"env"}, "", {"ACCELERATE_MIXED_PRECISION=bf16", "FSDP_OFFLOAD_PARAMS=true"});
  CHECK(set.exit_code == 0);
  CHECK(set.out.find("- Environment overrides:\n  ACCELERATE_MIXED_PRECISION=bf16\n  FSDP_OFFLOAD_PARAMS=true\n") !=
        std::string::npos);
  const LauncherResult bad = run_acc_with_input({"env"}, "", {"ACCELERATE_MIXED_PRECISION=fp4"});
  CHECK(bad.exit_code == 1);
  CHECK(bad.err ==
        "acc env: ACCELERATE_MIXED_PRECISION='fp4': 'mixed_precision' is 'fp4'; allowed values: no, fp16, bf16, "
        "fp8\n");
}

// Found: acc launch read ACCELERATE_USE_CPU itself, more laxly than the ranks: 'maybe' was false.
TEST_CASE("acc launch checks the variables that override its config file as the ranks do") {
  TemporaryHome home;
  const fs::path config = home.folder() / "two.yaml";
  std::ofstream(config) << "num_processes: 2\n";
  const LauncherResult launched =
      run_acc({"launch", "--config_file", config.string(), PROBE_BIN, "env"}, {"ACCELERATE_USE_CPU=maybe"}, 10s);
  CHECK(launched.exit_code == 2);
  CHECK(launched.out == "");
  CHECK(launched.err == "acc launch: ACCELERATE_USE_CPU='maybe': 'use_cpu' is 'maybe'; allowed values: true, false\n");
}
