// `acc_dist_worker elastic DIR STEPS EVERY [REFERENCE_DIR]`: a training run that survives being
// stopped, for `acc launch --max_restarts`, the fault matrix (fault_case.sh) and the soak
// (tests/faults/soak.sh). The pattern a program follows to resume after a restart:
//   1. automatic checkpoint naming under a project directory, and a save every EVERY steps;
//   2. the step counter registered for checkpointing, so that a checkpoint says where it was;
//   3. at start, load_state() of the newest checkpoint when there is one (a restart, or a new
//      launch after a crash), then train on to STEPS: the loader, generators, optimizer and
//      scheduler continue where the checkpoint left them, so the run ends as an uninterrupted one.
// Each rank writes its losses (from the step it started at) and final parameters to
// DIR/result_<rank>.pt; with REFERENCE_DIR it compares them, bit for bit, with that directory's
// uninterrupted run and fails on any difference.
//
// Fault injection (tests only): ACC_TEST_FAULT=<point>@<rank>:<step> makes that rank fail at that
// step (counted from 1) of the first start only (TORCHELASTIC_RESTART_COUNT unset or 0):
//   forward    SIGKILL between the model's two layers;
//   allreduce  SIGKILL with the step's gradient all-reduces started and not finished;
//   save       SIGKILL in the middle of the step's save_state (rank 0: with every file written,
//              before the rename; another rank: once it has written its own files);
//   exception  an exception thrown out of the training loop (exit code 1);
//   join       the rank sleeps instead of joining the job, so the rendezvous times out;
//   stall      the rank sleeps in the step's forward (the others wait in the all-reduce).
// Before it fails, the rank prints "fault: <point> on rank R at step S at unix time T" to stderr.
#include "../pch.hpp"  // first: libtorch, then doctest
#include "../resume_training.hpp"
#include "worker.hpp"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/serialize.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#if ACC_HAS_GLOO
namespace {

namespace fs = std::filesystem;

struct Fault {
  std::string point;
  int rank = -1;
  int64_t step = -1;

  // From ACC_TEST_FAULT; none on a restart, so that the restarted group gets through.
  static std::optional<Fault> from_environment() {
    const char* spec = std::getenv("ACC_TEST_FAULT");
    const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
    if (!spec || (restart && std::string(restart) != "0")) return std::nullopt;
    Fault fault;
    const std::string text = spec;
    const auto at = text.find('@'), colon = text.find(':');
    fault.point = text.substr(0, at);
    const bool known = fault.point == "forward" || fault.point == "allreduce" || fault.point == "save" ||
                       fault.point == "exception" || fault.point == "join" || fault.point == "stall";
    try {
      if (!known || at == std::string::npos || colon == std::string::npos || colon < at) throw 0;
      fault.rank = std::stoi(text.substr(at + 1, colon - at - 1));
      fault.step = std::stoll(text.substr(colon + 1));
    } catch (...) {
      throw acc::Error("ACC_TEST_FAULT='" + text +
                       "' is not valid; use <point>@<rank>:<step> with point forward, allreduce, save, exception, "
                       "join or stall, such as forward@1:5");
    }
    return fault;
  }

  bool hits(const std::string& where, int rank_now, int64_t step_now) const {
    return point == where && rank == rank_now && (point == "join" || step == step_now);
  }

  void announce() const {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
    std::fprintf(stderr, "fault: %s on rank %d at step %lld at unix time %.3f\n", point.c_str(), rank,
                 static_cast<long long>(step), static_cast<double>(ms.count()) / 1000);
    std::fflush(stderr);
  }
};

// The step counter, saved with every checkpoint (register_for_checkpointing).
struct Progress {
  int64_t step = 0;  // optimizer steps done
  void save(torch::serialize::OutputArchive& archive) const { archive.write("step", c10::IValue(step)); }
  void load(torch::serialize::InputArchive& archive) {
    c10::IValue value;
    archive.read("step", value);
    step = value.toInt();
  }
};

// The resume tests' network, with a place between its layers where a fault can strike.
struct FaultyNetImpl : resume::NetImpl {
  std::function<void()> between_layers;
  at::Tensor forward(const at::Tensor& x) {
    auto hidden = drop(torch::relu(fc1(x)));
    if (between_layers) between_layers();
    return fc2(hidden);
  }
};
TORCH_MODULE(FaultyNet);

// Runs after every other post-accumulation hook of a parameter's gradient (those of DDP's buckets
// were added first, by prepare()); once it has run for every parameter, every bucket's all-reduce
// has been started.
struct AfterGradientHook : torch::autograd::FunctionPostHook {
  explicit AfterGradientHook(std::function<void()> then) : then(std::move(then)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    then();
    return outputs;
  }
  std::function<void()> then;
};

fs::path result_file(const fs::path& dir, int rank) { return dir / ("result_" + std::to_string(rank) + ".pt"); }

// What a run leaves for the comparison: the first step it trained, its losses, the parameters.
std::vector<at::Tensor> result_tensors(int64_t first_step, const std::vector<float>& losses, FaultyNet& net) {
  std::vector<at::Tensor> tensors{at::tensor(first_step), at::tensor(losses)};
  for (const auto& p : net->parameters()) tensors.push_back(p.detach().clone());
  return tensors;
}

// Fails unless `mine` continues the uninterrupted run `reference` exactly.
void compare_with_reference(const std::vector<at::Tensor>& mine, const fs::path& reference_file) {
  std::vector<at::Tensor> reference;
  torch::load(reference, reference_file.string());
  const int64_t first = mine[0].item<int64_t>();
  const int64_t count = mine[1].numel();
  if (reference.size() != mine.size() || reference[0].item<int64_t>() != 0 || reference[1].numel() != first + count)
    throw acc::Error(reference_file.string() + " is not an uninterrupted run of the same job");
  if (!at::equal(mine[1], reference[1].narrow(0, first, count)))
    throw acc::Error("the losses of steps " + std::to_string(first + 1) + ".." + std::to_string(first + count) +
                     " differ from the uninterrupted run's in " + reference_file.string());
  for (std::size_t i = 2; i < mine.size(); ++i)
    if (!at::equal(mine[i], reference[i]))
      throw acc::Error("final parameter " + std::to_string(i - 2) + " differs from the uninterrupted run's in " +
                       reference_file.string());
}

int train(const fs::path& dir, int64_t steps, int64_t every, const fs::path& reference) {
  const auto fault = Fault::from_environment();
  const int rank = acc::ProcessEnvironment::from_environment().rank;
  const auto sleep_for_an_hour = [] { std::this_thread::sleep_for(std::chrono::hours(1)); };
  if (fault && fault->hits("join", rank, 0)) {
    fault->announce();
    sleep_for_an_hour();
  }

  const auto project = acc::ProjectConfiguration().project_dir(dir).automatic_checkpoint_naming(true).total_limit(2);
  acc::Accelerator<acc::CPU, acc::FP32, acc::Shuffled> accelerator(acc::AcceleratorOptions().project_config(project));
  accelerator.set_seed(0, /*device_specific=*/true);
  FaultyNet net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  torch::optim::StepLR sched(opt, 4, 0.7);
  auto [model, optimizer, loader, scheduler] =
      accelerator.prepare(net, opt, acc::DataLoader(resume::Blobs{}, acc::DataLoaderOptions(8).seed(5)), sched);
  Progress progress;
  accelerator.register_for_checkpointing(progress);
  if (!project.checkpoints().empty()) {
    const auto from = accelerator.load_state();
    if (accelerator.is_main_process())
      std::cout << "resumed from " << from.filename().string() << " at step " << progress.step << std::endl;
  }
  const int64_t first_step = progress.step;

  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // kept alive: tensors hold them weakly
  if (fault) {
    const auto fail_here = [&, fault = *fault](const std::string& point) {
      if (!fault.hits(point, rank, progress.step + 1)) return;
      fault.announce();
      if (point == "stall") return sleep_for_an_hour();
      if (point == "exception")
        throw acc::Error("ACC_TEST_FAULT=" + point + ": rank " + std::to_string(rank) + " raised at step " +
                         std::to_string(fault.step));
      std::raise(SIGKILL);
    };
    net->between_layers = [=] {
      for (const char* point : {"forward", "exception", "stall"}) fail_here(point);
    };
    const auto parameters = net->parameters();
    auto hooked = std::make_shared<std::size_t>(0);
    for (const auto& p : parameters) {
      accumulators.push_back(torch::autograd::impl::grad_accumulator(p));
      accumulators.back()->add_post_hook(std::make_unique<AfterGradientHook>([=] {
        if (++*hooked % parameters.size() == 0) fail_here("allreduce");
      }));
    }
  }

  std::vector<float> losses;
  while (progress.step < steps) {
    for (auto& batch : loader) {
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      accelerator.backward(loss);
      optimizer.step();
      scheduler.step();
      optimizer.zero_grad();
      losses.push_back(loss.item<float>());
      ++progress.step;
      if (progress.step % every == 0) {
        if (fault && fault->hits("save", rank, progress.step)) {
          fault->announce();
          // The checkpointer's own test hook; "metadata" is rank 0's last stage before the rename.
          const std::string stage = rank == 0 ? "metadata" : "random_states";
          setenv("ACC_TEST_FAIL_SAVE_AT", (stage + "@" + std::to_string(rank) + ":kill").c_str(), 1);
        }
        const auto saved = accelerator.save_state();
        if (accelerator.is_main_process())
          std::cout << "saved " << saved.filename().string() << " at step " << progress.step << std::endl;
      }
      if (progress.step == steps) break;
    }
  }

  const auto mine = result_tensors(first_step, losses, net);
  torch::save(mine, result_file(dir, rank).string());
  if (!reference.empty()) {
    compare_with_reference(mine, result_file(reference, rank));
    std::cout << "rank " << rank << ": steps " << first_step + 1 << ".." << steps
              << " and the final parameters equal the uninterrupted run's bit for bit" << std::endl;
  }
  return 0;
}

}  // namespace

int elastic_training(int argc, char** argv) {
  const auto positive = [](const char* text) {
    char* end = nullptr;
    const long long value = std::strtoll(text, &end, 10);
    return *end == '\0' && value > 0 ? static_cast<int64_t>(value) : int64_t{0};
  };
  if (argc < 5 || argc > 6 || !positive(argv[3]) || !positive(argv[4])) {
    std::cerr << "usage: acc_dist_worker elastic DIR STEPS EVERY [REFERENCE_DIR] (STEPS, EVERY: positive integers)\n";
    return 64;
  }
  try {
    return train(argv[2], positive(argv[3]), positive(argv[4]), argc == 6 ? argv[5] : "");
  } catch (const std::exception& e) {
    // One write: the ranks share acc launch's stderr, and a line written piece by piece interleaves
    // with another rank's (the fault matrix looks for each rank's line whole).
    const auto line =
        "rank " + std::to_string(acc::ProcessEnvironment::from_environment().rank) + ": " + e.what() + "\n";
    std::fputs(line.c_str(), stderr);
    return 1;
  }
}
#else
int elastic_training(int, char**) {
  std::cerr << "acc_dist_worker elastic needs Gloo, which this build lacks\n";
  return 1;
}
#endif
