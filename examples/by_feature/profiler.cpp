// The C++ twin of Accelerate's examples/by_feature/profiler.py: each epoch's training runs inside
// the profiler (acc::Profiler, Python's `with accelerator.profile() as prof`), which writes each
// process's Chrome trace to --output_trace_dir; then the operators' key averages are printed and
// the model evaluated. It checks what the script shows: every process wrote its own trace file,
// holding the model's operators, and the table lists them, one forward ReLU per training step.
//
//   build/bin/profiler --record_shapes 1 --with_flops 1
//   build/bin/acc launch --cpu --num_processes 2 build/bin/profiler --output_trace_dir traces
#include "../common/accuracy.hpp"
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

namespace {

struct Settings {
  int64_t epochs = 3;
  int64_t batch_size = 16;
  double lr = 1e-2;
  int64_t record_shapes = 0;
  int64_t profile_memory = 0;
  int64_t with_flops = 0;
  std::string output_trace_dir;  // "": profiler_traces/<N>_processes
  int64_t train_size = 256;
  int64_t eval_size = 301;
  int64_t seed = 0;
};

// Whether `file` is a Chrome trace with an event named `name`.
bool trace_has(const std::filesystem::path& file, const std::string& name) {
  std::ifstream in(file);
  if (!in) return false;
  const auto trace = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!trace.is_object() || !trace.contains("traceEvents")) return false;
  for (const auto& event : trace["traceEvents"])
    if (event.is_object() && event.value("name", "") == name) return true;
  return false;
}

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  const auto trace_dir = s.output_trace_dir.empty()
                             ? "profiler_traces/" + std::to_string(accelerator.num_processes()) + "_processes"
                             : s.output_trace_dir;
  const auto profile_options = acc::ProfileOptions()  // acc: ProfileKwargs
                                   .record_shapes(s.record_shapes != 0)
                                   .profile_memory(s.profile_memory != 0)
                                   .with_flops(s.with_flops != 0)
                                   .output_trace_dir(trace_dir);
  const auto trace_of = [&](int rank) {
    return std::filesystem::path(trace_dir) / ("profile_" + std::to_string(rank) + ".json");
  };
  // A trace left by an earlier run must not pass for this run's.
  if (accelerator.is_main_process())
    for (int rank = 0; rank < accelerator.num_processes(); ++rank) std::filesystem::remove(trace_of(rank));
  accelerator.wait_for_everyone();  // acc

  const auto seed = static_cast<uint64_t>(s.seed);
  accelerator.set_seed(seed);
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  const int64_t per_step = s.batch_size * accelerator.num_processes();
  const int64_t steps_per_epoch = (s.train_size + per_step - 1) / per_step;
  acc::optim::LinearSchedule sched(  // Python's get_linear_schedule_with_warmup
      opt, acc::optim::WarmupOptions().warmup_steps(10).total_steps(s.epochs * steps_per_epoch));
  const auto options = acc::DataLoaderOptions(s.batch_size).seed(seed);
  auto [model, optimizer, train_loader, eval_loader, scheduler] = accelerator.prepare(  // acc
      net, opt, acc::DataLoader(examples::Points(s.train_size, seed + 1), options),
      acc::DataLoader(examples::Points(s.eval_size, seed + 2), acc::DataLoaderOptions(options).shuffle(false)), sched);

  bool listed = true;
  for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
    train_loader.set_epoch(epoch);
    acc::Profiler prof(accelerator, profile_options);  // acc: with accelerator.profile() as prof
    int64_t steps = 0;
    for (auto& batch : train_loader) {
      auto step = accelerator.accumulate(model);                                                    // acc
      accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));  // acc
      optimizer.step();
      scheduler.step();
      optimizer.zero_grad();
      ++steps;
    }
    prof.stop();  // acc: the end of the `with`: this process's trace written, every process waited for
    const auto sort_by = accelerator.device().is_cuda() ? "self_cuda_time_total" : "self_cpu_time_total";
    const auto averages = prof.key_averages();                     // acc
    const auto table = averages.table(sort_by, /*row_limit=*/-1);  // acc
    accelerator.print(table);                                      // acc
    // The model's operators are in the table: its linear layers, and one forward ReLU per step.
    const auto* relu = averages.find("aten::relu");
    listed = listed && relu && relu->count == steps && table.find("aten::addmm") != std::string::npos;
    accelerator.print("epoch", epoch, "accuracy", examples::accuracy(accelerator, model, eval_loader));
  }

  bool traces = true;  // every process's trace, read by each process
  for (int rank = 0; rank < accelerator.num_processes(); ++rank)
    traces = traces && trace_has(trace_of(rank), "aten::addmm");
  const auto all_listed = accelerator.gather_object(static_cast<int64_t>(listed));  // acc
  const auto all_traces = accelerator.gather_object(static_cast<int64_t>(traces));  // acc
  bool ok = true;
  for (size_t rank = 0; rank < all_listed.size(); ++rank) ok = ok && all_listed[rank] == 1 && all_traces[rank] == 1;
  accelerator.print("traces of", accelerator.num_processes(), "processes in", trace_dir,
                    "with the model's operators:", ok ? "yes" : "no");
  if (!ok) {
    std::cerr << "profiler: expected profile_<rank>.json of every process in " << trace_dir
              << " holding aten::addmm, and a table listing aten::relu once per training step\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("profiler", "Profiles each epoch's training: Chrome traces per process and an operator table.")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--record_shapes", s.record_shapes, "1: record the operators' input shapes")
      .add("--profile_memory", s.profile_memory, "1: record allocations")
      .add("--with_flops", s.with_flops, "1: estimate the FLOPs of matrix products")
      .add("--output_trace_dir", s.output_trace_dir,
           "where each process writes profile_<rank>.json; empty: profiler_traces/<N>_processes")
      .add("--train_size", s.train_size, "training examples")
      .add("--eval_size", s.eval_size, "evaluation examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "profiler: " << e.what() << "\n";
    return 1;
  }
}
