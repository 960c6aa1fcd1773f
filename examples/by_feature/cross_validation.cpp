// The C++ twin of Accelerate's examples/by_feature/cross_validation.py: k-fold cross-validation,
// each fold training a fresh model and optimizer prepared anew after free_memory(), evaluating on
// its held-out fold and predicting the test set; the test predictions of all folds are averaged.
// Folds are stratified (each holds about 1/k of every class), as sklearn's StratifiedKFold makes
// them. It checks what gather_for_metrics does for every fold: each evaluation gathered the
// fold's examples, each exactly once and in order (no fold size divides into the batches of two
// processes), each test prediction the whole test set; and the averaged predictions beat chance.
//
//   build/bin/cross_validation --num_folds 3
//   build/bin/acc launch --cpu --num_processes 2 build/bin/cross_validation
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <cstddef>
#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Settings {
  int64_t num_folds = 3;
  int64_t epochs = 3;
  int64_t batch_size = 16;
  double lr = 1e-2;
  int64_t train_size = 512;  // split into the folds: 172, 170 and 170 examples (seed 0)
  int64_t test_size = 301;
  int64_t seed = 0;
};

// Some of a dataset's examples, in the order given (Python's Dataset.select).
struct Selection {
  examples::Points points;
  std::vector<int64_t> indices;
  std::size_t size() const { return indices.size(); }
  torch::data::Example<> get(std::size_t i) const { return points.get(static_cast<std::size_t>(indices[i])); }
};

// Each example's fold: the examples of each class dealt out to the folds in turn.
std::vector<int64_t> stratified_folds(const at::Tensor& labels, int64_t num_folds) {
  std::map<int64_t, int64_t> dealt;  // per class
  std::vector<int64_t> fold;
  for (int64_t i = 0; i < labels.size(0); ++i) fold.push_back(dealt[labels[i].item<int64_t>()]++ % num_folds);
  return fold;
}

std::pair<Selection, Selection> split(const examples::Points& points, const std::vector<int64_t>& fold_of,
                                      int64_t fold) {
  Selection train{points, {}}, held_out{points, {}};
  for (std::size_t i = 0; i < fold_of.size(); ++i)
    (fold_of[i] == fold ? held_out : train).indices.push_back(static_cast<int64_t>(i));
  return {train, held_out};
}

// Every process gathered the same, so every process fails here at once.
int gathered_wrongly(const std::string& what, const at::Tensor& gathered, const at::Tensor& expected) {
  std::cerr << "cross_validation: " << what << " gathered " << gathered.numel() << " examples; expected its "
            << expected.numel() << ", once each and in order\n";
  return 1;
}

template <class Accelerator>
int cross_validate(Accelerator& accelerator, const Settings& s) {
  const auto seed = static_cast<uint64_t>(s.seed);
  const examples::Points data(s.train_size, seed + 1), test_set(s.test_size, seed + 2);
  const auto fold_of = stratified_folds(data.labels, s.num_folds);
  accelerator.set_seed(seed);
  std::vector<at::Tensor> test_logits;  // one per fold, of the whole test set
  for (int64_t fold = 0; fold < s.num_folds; ++fold) {
    auto [train_set, held_out] = split(data, fold_of, fold);
    const auto held_out_labels = data.labels.index_select(0, at::tensor(held_out.indices));
    torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
    const auto options = acc::DataLoaderOptions(s.batch_size).seed(seed);
    const auto in_order = acc::DataLoaderOptions(options).shuffle(false);
    auto [model, optimizer, train_loader, eval_loader, test_loader] = accelerator.prepare(  // acc
        net, opt, acc::DataLoader(std::move(train_set), options), acc::DataLoader(std::move(held_out), in_order),
        acc::DataLoader(test_set, in_order));

    for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
      train_loader.set_epoch(epoch);
      for (auto& batch : train_loader) {
        accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));  // acc
        optimizer.step();
        optimizer.zero_grad();
      }
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> predictions, labels;
      for (auto& batch : eval_loader) {
        predictions.push_back(accelerator.gather_for_metrics(model(batch.data).argmax(1)));  // acc
        labels.push_back(accelerator.gather_for_metrics(batch.target));                      // acc
      }
      const auto predicted = at::cat(predictions).cpu(), gathered = at::cat(labels).cpu();
      if (predicted.numel() != gathered.numel() || !gathered.equal(held_out_labels))
        return gathered_wrongly("fold " + std::to_string(fold) + "'s evaluation", gathered, held_out_labels);
      accelerator.print("fold", fold, "epoch", epoch, "held-out accuracy",
                        acc::item<double>(predicted.eq(gathered).to(at::kDouble).mean()), "over", gathered.numel(),
                        "examples");
    }

    at::NoGradGuard no_grad;
    std::vector<at::Tensor> logits, labels;
    for (auto& batch : test_loader) {
      logits.push_back(accelerator.gather_for_metrics(model(batch.data)).cpu());  // acc
      labels.push_back(accelerator.gather_for_metrics(batch.target).cpu());       // acc
    }
    const auto gathered = at::cat(labels);
    test_logits.push_back(at::cat(logits));
    if (test_logits.back().size(0) != gathered.numel() || !gathered.equal(test_set.labels))
      return gathered_wrongly("fold " + std::to_string(fold) + "'s test predictions", gathered, test_set.labels);
    accelerator.free_memory();  // acc: the next fold prepares a fresh model, optimizer and loaders
  }

  const auto averaged = at::stack(test_logits).mean(0);
  const double accuracy = acc::item<double>(averaged.argmax(1).eq(test_set.labels).to(at::kDouble).mean());
  accelerator.print("test accuracy of the", s.num_folds, "folds' averaged predictions:", accuracy, "on",
                    accelerator.num_processes(),
                    "processes; every gather held its fold's or the test set's examples once each, in order");
  // Chance is 0.25 (4 classes); the classes are linear in the inputs, which each fold's model
  // learns to well above 0.8 in these epochs.
  if (accuracy < 0.8) {
    std::cerr << "cross_validation: expected an accuracy of at least 0.8 from the folds' averaged predictions\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("cross_validation", "k-fold cross-validation; the folds' test predictions are averaged.")
      .add("--num_folds", s.num_folds, "folds of the training set")
      .add("--epochs", s.epochs, "passes over each fold's training examples")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--train_size", s.train_size, "training examples, split into the folds")
      .add("--test_size", s.test_size, "test examples")
      .add("--seed", s.seed, "seed of the data and the models")
      .parse(argc, argv);
  try {
    if (s.num_folds < 2) throw acc::Error("--num_folds must be at least 2");
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return cross_validate(accelerator, s); },
        acc::strategies<ACC_DEFAULT_STRATEGIES>, acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "cross_validation: " << e.what() << "\n";
    return 1;
  }
}
