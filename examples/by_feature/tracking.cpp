// The C++ twin of Accelerate's examples/by_feature/tracking.py: log_with "all" trackers (JSON
// lines, CSV and, where the program links it, TensorBoard), init_trackers storing the run's
// configuration, log() of the training loss and the accuracy after every epoch, end_training().
// It checks what the trackers promise: only the main process wrote the run's files (each process
// points its trackers at a directory of its own, project_dir/process_<i>, so the files say who
// wrote them), the config is stored, and every value logged is in metrics.jsonl and metrics.csv,
// per epoch.
//
//   build/bin/tracking --project_dir runs/tracking
//   build/bin/acc launch --cpu --num_processes 2 build/bin/tracking
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

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Settings {
  int64_t epochs = 3;
  int64_t batch_size = 16;
  double lr = 1e-2;
  int64_t train_size = 512;
  int64_t eval_size = 301;
  int64_t seed = 0;
  std::string project_dir = "tracking_run";
};

const std::string kRun = "tracking";  // init_trackers' project name: the run's directory

std::vector<std::string> lines_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> cells_of(const std::string& row) {  // the values logged hold no commas or quotes
  std::vector<std::string> cells;
  std::istringstream in(row);
  for (std::string cell; std::getline(in, cell, ',');) cells.push_back(cell);
  return cells;
}

// What is wrong with the run's files ("" when nothing): the configuration and, in order, the values
// logged per epoch, in the JSON lines and CSV trackers' files under run_dir.
std::string check_run_files(const std::filesystem::path& run_dir, const acc::TrackedValues& config,
                            const std::vector<acc::TrackedValues>& logged) {
  const auto stored =
      nlohmann::json::parse(std::ifstream(run_dir / "config.json"), nullptr, /*allow_exceptions=*/false);
  const auto csv_config = lines_of(run_dir / "config.csv");
  if (csv_config.size() != config.size() + 1) return "config.csv does not hold the configuration";
  for (std::size_t i = 0; i < config.size(); ++i) {
    const auto& [key, value] = config[i];
    if (!stored.contains(key) || !stored[key].is_number() || stored[key].get<double>() != value.number())
      return "config.json lacks " + key + " = " + value.text();
    if (cells_of(csv_config[i + 1]) != std::vector<std::string>{key, value.text()})
      return "config.csv lacks " + key + " = " + value.text();
  }

  const auto jsonl = lines_of(run_dir / "metrics.jsonl"), csv = lines_of(run_dir / "metrics.csv");
  if (jsonl.size() != logged.size() || csv.size() != logged.size() + 1)
    return "expected " + std::to_string(logged.size()) + " logged rows in metrics.jsonl and metrics.csv";
  const auto columns = cells_of(csv[0]);
  for (std::size_t epoch = 0; epoch < logged.size(); ++epoch) {
    const auto row = nlohmann::json::parse(jsonl[epoch], nullptr, /*allow_exceptions=*/false);
    const auto cells = cells_of(csv[epoch + 1]);
    if (!row.is_object() || row.value("_step", int64_t{-1}) != static_cast<int64_t>(epoch) ||
        cells.size() != columns.size() || cells[0] != std::to_string(epoch))
      return "the row of epoch " + std::to_string(epoch) + " is not there";
    for (const auto& [key, value] : logged[epoch]) {
      if (!row.contains(key) || !row[key].is_number() || row[key].get<double>() != value.number())
        return "metrics.jsonl lacks " + key + " = " + value.text() + " at epoch " + std::to_string(epoch);
      const auto column = static_cast<std::size_t>(std::find(columns.begin(), columns.end(), key) - columns.begin());
      if (column == columns.size() || cells[column] != value.text())  // the text TrackedValue gives every tracker
        return "metrics.csv lacks " + key + " = " + value.text() + " at epoch " + std::to_string(epoch);
    }
  }
  return "";
}

// Where a process's trackers write: a directory of its own, so that the files say who wrote them.
std::filesystem::path logging_dir(const std::filesystem::path& project_dir, int process) {
  return project_dir / ("process_" + std::to_string(process));
}

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  const std::filesystem::path project_dir = s.project_dir;
  std::filesystem::remove_all(logging_dir(project_dir, accelerator.process_index()));  // an earlier run's files
  accelerator.project_configuration() =                                                // acc
      acc::ProjectConfiguration()
          .project_dir(project_dir)
          .logging_dir(logging_dir(project_dir, accelerator.process_index()));

  const auto seed = static_cast<uint64_t>(s.seed);
  accelerator.set_seed(seed);
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  const auto options = acc::DataLoaderOptions(s.batch_size).seed(seed);
  auto [model, optimizer, train_loader, eval_loader] = accelerator.prepare(  // acc
      net, opt, acc::DataLoader(examples::Points(s.train_size, seed + 1), options),
      acc::DataLoader(examples::Points(s.eval_size, seed + 2), acc::DataLoaderOptions(options).shuffle(false)));

  const acc::TrackedValues config{
      {"lr", s.lr}, {"num_epochs", s.epochs}, {"seed", s.seed}, {"batch_size", s.batch_size}};
  accelerator.init_trackers(kRun, config);  // acc: on the main process; stores the configuration
  std::vector<acc::TrackedValues> logged;
  for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
    train_loader.set_epoch(epoch);
    double total_loss = 0;
    for (auto& batch : train_loader) {
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      total_loss += acc::item<double>(loss);
      accelerator.backward(loss);  // acc
      optimizer.step();
      optimizer.zero_grad();
    }
    const double accuracy = examples::accuracy(accelerator, model, eval_loader);
    accelerator.print("epoch", epoch, "accuracy", accuracy, "train loss", total_loss);
    logged.push_back({{"accuracy", accuracy}, {"train_loss", total_loss}, {"epoch", epoch}});
    accelerator.log(logged.back(), epoch);  // acc: every process calls it; the trackers are on the main one
  }
  accelerator.end_training();       // acc
  accelerator.wait_for_everyone();  // acc

  std::string problem;
  if (accelerator.is_main_process()) {
    for (int process = 1; process < accelerator.num_processes(); ++process)
      if (std::filesystem::exists(logging_dir(project_dir, process)))
        problem = "process " + std::to_string(process) + " wrote tracker files";
    if (problem.empty()) problem = check_run_files(logging_dir(project_dir, 0) / kRun, config, logged);
  }
  problem = accelerator.broadcast_object(problem);  // acc: every process exits as the main one does
  accelerator.print(
      "run files under", (logging_dir(project_dir, 0) / kRun).string(), "from", accelerator.num_processes(),
      "processes; the main process's only, with the config and every value logged:", problem.empty() ? "yes" : "no");
  if (!problem.empty()) {
    if (accelerator.is_main_process()) std::cerr << "tracking: " << problem << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("tracking", "Logs the configuration, training loss and accuracy to every tracker (log_with all).")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--train_size", s.train_size, "training examples")
      .add("--eval_size", s.eval_size, "evaluation examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .add("--project_dir", s.project_dir, "the run's directory: process_<i>/tracking for process i's trackers")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    config.log_with = {"all"};                      // acc: every tracker this program has
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, acc::strategies<ACC_DEFAULT_STRATEGIES>,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "tracking: " << e.what() << "\n";
    return 1;
  }
}
