// complete_example: everything a real training program needs, on a task small enough to run on a
// CPU in seconds (classify points into 4 classes). What it shows:
//   - the strategy, precision, gradient accumulation and trackers chosen by the config (`acc config`,
//     `acc launch` flags, ACCELERATE_* / ACC_* variables) through acc::run;
//   - an evaluation after every epoch whose metrics count every example exactly once on any number
//     of processes (gather_for_metrics drops what even batches repeated);
//   - a checkpoint every N optimizer steps, numbered automatically, the newest few kept;
//   - resuming from the newest checkpoint when started again, so that under
//     `acc launch --max_restarts K` a killed run ends exactly as an uninterrupted one;
//   - the final model saved as safetensors.
//
//   build/bin/complete_example --project_dir runs/a
//   build/bin/acc launch --cpu --num_processes 2 build/bin/complete_example --project_dir runs/b
//   ACCELERATE_GRADIENT_ACCUMULATION_STEPS=2 ACC_LOG_WITH=jsonl build/bin/complete_example
//   build/bin/acc launch --cpu --num_processes 2 --max_restarts 1 build/bin/complete_example --project_dir runs/c
//
// Demo hook for the elastic restart (tests only): ACC_EXAMPLE_FAIL_AT=<rank>:<step> kills that rank
// with SIGKILL right after optimizer step <step> of the first start (TORCHELASTIC_RESTART_COUNT unset
// or 0), as a crashed machine would.
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/schedulers/step_lr.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>

namespace {

struct Settings {
  int64_t epochs = 4;
  int64_t batch_size = 32;
  double lr = 1e-2;
  uint64_t seed = 0;
  int64_t train_size = 1000;
  int64_t eval_size = 301;  // a prime: it divides by no number of processes
  std::filesystem::path project_dir = "complete_example_run";
  int64_t checkpoint_every = 10;  // optimizer steps; 0: no checkpoints
  int64_t total_limit = 2;        // checkpoints kept
};

constexpr const char* usage =
    "usage: complete_example [--epochs N] [--batch_size N] [--lr X] [--seed N] [--train_size N]\n"
    "                        [--eval_size N] [--project_dir DIR] [--checkpoint_every STEPS]\n"
    "                        [--total_limit N]\n"
    "The strategy, mixed precision, gradient accumulation and trackers come from the config\n"
    "(acc config, acc launch flags, ACCELERATE_* and ACC_* variables).\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "complete_example: " << message << "\n" << usage;
  std::exit(2);
}

Settings parse(int argc, char** argv) {
  Settings s;
  const std::map<std::string, std::function<void(const std::string&)>> flags{
      {"--epochs", [&](const std::string& v) { s.epochs = std::stoll(v); }},
      {"--batch_size", [&](const std::string& v) { s.batch_size = std::stoll(v); }},
      {"--lr", [&](const std::string& v) { s.lr = std::stod(v); }},
      {"--seed", [&](const std::string& v) { s.seed = std::stoull(v); }},
      {"--train_size", [&](const std::string& v) { s.train_size = std::stoll(v); }},
      {"--eval_size", [&](const std::string& v) { s.eval_size = std::stoll(v); }},
      {"--project_dir", [&](const std::string& v) { s.project_dir = v; }},
      {"--checkpoint_every", [&](const std::string& v) { s.checkpoint_every = std::stoll(v); }},
      {"--total_limit", [&](const std::string& v) { s.total_limit = std::stoll(v); }},
  };
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      std::exit(0);
    }
    const auto it = flags.find(flag);
    if (it == flags.end()) usage_error("unknown flag '" + flag + "'");
    if (i + 1 == argc) usage_error(flag + " needs a value");
    try {
      it->second(argv[++i]);
    } catch (const std::exception&) {
      usage_error(flag + "='" + argv[i] + "' is not a valid value");
    }
  }
  if (s.epochs < 1 || s.batch_size < 1 || s.train_size < 1 || s.eval_size < 1 || s.checkpoint_every < 0 ||
      s.total_limit < 0)
    usage_error("--epochs, --batch_size, --train_size, --eval_size must be at least 1; the others at least 0");
  return s;
}

// What a checkpoint must add to the prepared objects to resume: the optimizer steps done.
struct Progress {
  int64_t step = 0;
  void save(torch::serialize::OutputArchive& archive) const { archive.write("step", c10::IValue(step)); }
  void load(torch::serialize::InputArchive& archive) {
    c10::IValue value;
    archive.read("step", value);
    step = value.toInt();
  }
};

// ACC_EXAMPLE_FAIL_AT=<rank>:<step>, on the first start only.
std::optional<std::pair<int, int64_t>> demo_failure() {
  const char* spec = std::getenv("ACC_EXAMPLE_FAIL_AT");
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  if (!spec || (restart && std::string(restart) != "0")) return std::nullopt;
  const std::string text = spec;
  const auto colon = text.find(':');
  if (colon == std::string::npos) throw acc::Error("ACC_EXAMPLE_FAIL_AT='" + text + "': use <rank>:<step>");
  return std::make_pair(std::stoi(text.substr(0, colon)), std::stoll(text.substr(colon + 1)));
}

struct Metrics {
  double loss = 0, accuracy = 0;
  int64_t correct = 0, count = 0;
};

// Loss and accuracy over the whole evaluation set: each process predicts its share, and
// gather_for_metrics brings every example exactly once to every process.
template <class Accelerator, class Model, class Loader>
Metrics evaluate(Accelerator& accelerator, Model& model, Loader& loader) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> losses, hits;
  for (auto& batch : loader) {
    const auto logits = model(batch.data);
    const auto loss = torch::nn::functional::cross_entropy(
        logits, batch.target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    const auto hit = logits.argmax(1).eq(batch.target).to(at::kLong);  // Gloo gathers no bool tensors
    losses.push_back(accelerator.gather_for_metrics(loss));            // acc
    hits.push_back(accelerator.gather_for_metrics(hit));               // acc
  }
  const auto all_losses = at::cat(losses), all_hits = at::cat(hits);
  Metrics metrics;
  metrics.count = all_hits.numel();
  metrics.correct = all_hits.sum().template item<int64_t>();
  metrics.accuracy = static_cast<double>(metrics.correct) / static_cast<double>(metrics.count);
  metrics.loss = all_losses.to(at::kDouble).mean().template item<double>();
  return metrics;
}

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  // Checkpoints under project_dir/checkpoints/checkpoint_<i>, trackers under project_dir.
  accelerator.project_configuration() = acc::ProjectConfiguration()  // acc
                                            .project_dir(s.project_dir)
                                            .automatic_checkpoint_naming(true)
                                            .total_limit(s.total_limit);
  accelerator.set_seed(s.seed);  // acc: the same initial model on every process

  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  torch::optim::StepLR sched(opt, /*step_size=*/40, /*gamma=*/0.5);
  const auto options = acc::DataLoaderOptions(s.batch_size).seed(s.seed);
  auto [model, optimizer, train_loader, eval_loader, scheduler] =  // acc
      accelerator.prepare(net, opt, acc::DataLoader(examples::Points(s.train_size, s.seed + 1), options),
                          acc::DataLoader(examples::Points(s.eval_size, s.seed + 2), options), sched);
  Progress progress;
  accelerator.register_for_checkpointing(progress);  // acc

  const auto& project = accelerator.project_configuration();
  if (!project.checkpoints().empty()) {          // started again: continue where the newest checkpoint is
    const auto from = accelerator.load_state();  // acc
    accelerator.print("resumed from", from.filename().string(), "at step", progress.step);
  } else {
    const auto before = evaluate(accelerator, model, eval_loader);
    accelerator.print("before training: first_loss=" + std::to_string(before.loss),
                      "accuracy=" + std::to_string(before.accuracy), "correct=" + std::to_string(before.correct),
                      "count=" + std::to_string(before.count));
  }

  // Every process has as many batches (even batches), and accumulation ends with each epoch.
  const auto accumulation = accelerator.options().gradient_accumulation_steps();
  const auto steps_per_epoch = (static_cast<int64_t>(train_loader.size()) + accumulation - 1) / accumulation;
  const auto failure = demo_failure();
  const auto save_due = [&] { return s.checkpoint_every > 0 && progress.step % s.checkpoint_every == 0; };
  const auto save = [&] {
    const auto saved = accelerator.save_state();  // acc
    accelerator.print("saved", saved.filename().string(), "at step", progress.step);
  };

  accelerator.init_trackers("complete_example", {{"lr", s.lr},  // acc
                                                 {"batch_size", s.batch_size},
                                                 {"gradient_accumulation_steps", accumulation},
                                                 {"num_processes", accelerator.num_processes()},
                                                 {"seed", s.seed}});
  Metrics metrics;
  for (int64_t epoch = progress.step / steps_per_epoch; epoch < s.epochs; ++epoch) {
    train_loader.set_epoch(epoch);  // a resumed epoch continues at the checkpoint's batch
    net->train();
    for (auto& batch : train_loader) {
      auto step_scope = accelerator.accumulate(model);  // acc
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      accelerator.backward(loss);  // acc
      optimizer.step();
      scheduler.step();
      optimizer.zero_grad();
      if (!accelerator.sync_gradients()) continue;  // a micro-batch of an accumulation
      ++progress.step;
      accelerator.log({{"train_loss", loss.template item<double>()}}, progress.step);  // acc
      if (failure && failure->first == accelerator.process_index() && failure->second == progress.step) {
        std::cerr << "ACC_EXAMPLE_FAIL_AT: killing rank " << failure->first << " after step " << progress.step
                  << std::endl;
        std::raise(SIGKILL);
      }
      // At an epoch's end the checkpoint waits for the evaluation, so that a resumed run never skips one.
      if (save_due() && progress.step % steps_per_epoch != 0) save();
    }
    net->eval();
    metrics = evaluate(accelerator, model, eval_loader);
    accelerator.print("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(s.epochs) + ":",
                      "step=" + std::to_string(progress.step), "loss=" + std::to_string(metrics.loss),
                      "accuracy=" + std::to_string(metrics.accuracy), "correct=" + std::to_string(metrics.correct),
                      "count=" + std::to_string(metrics.count));
    accelerator.log({{"eval_loss", metrics.loss}, {"accuracy", metrics.accuracy}}, progress.step);  // acc
    if (save_due()) save();
  }
  accelerator.end_training();  // acc

  accelerator.wait_for_everyone();                               // acc
  accelerator.save_model(model, s.project_dir / "final_model");  // acc: model.safetensors
  accelerator.print("final_loss=" + std::to_string(metrics.loss), "final_accuracy=" + std::to_string(metrics.accuracy),
                    "eval_count=" + std::to_string(metrics.count));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Settings settings = parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc: the YAML, then acc launch's flags and the environment
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, settings); },
        acc::strategies<ACC_DEFAULT_STRATEGIES>, acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "complete_example: " << e.what() << "\n";
    return 1;
  }
}
