// The training run of the resume tests, shared by the single-process tests and the multi-process
// worker: a small MLP with dropout (so the random generators matter) on 80 fixed samples, AdamW,
// StepLR, through accumulate(); optionally an inf loss at one batch (loss scaling skips it).
// Trains `count` batches, after load_state(from) and before save_state(to) when they are given.
#pragma once

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/schedulers/step_lr.h>

#include <filesystem>
#include <limits>
#include <vector>

namespace resume {

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden = 32)
      : fc1(register_module("fc1", torch::nn::Linear(8, hidden))),
        drop(register_module("drop", torch::nn::Dropout(0.25))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(drop(torch::relu(fc1(x)))); }
  torch::nn::Linear fc1;
  torch::nn::Dropout drop;
  torch::nn::Linear fc2;
};
TORCH_MODULE(Net);

// 80 fixed samples of a 3-class problem: 10 batches of 8 per epoch.
struct Blobs {
  at::Tensor x, y;
  Blobs() {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(77);
    x = at::randn({80, 8}, generator);
    y = x.narrow(1, 0, 3).argmax(1);
  }
  std::size_t size() const { return 80; }
  torch::data::Example<> get(std::size_t i) const { return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]}; }
};

struct Recipe {
  int64_t scheduler_step_size = 1000;  // StepLR's step size (1000: the learning rate stays)
  int overflow_at = -1;                // the batch (counted over the whole run) whose loss is inf
};

struct Run {
  std::vector<float> losses;
  std::vector<double> scales;  // the loss scale after each batch (with loss scaling)
  std::vector<double> lrs;     // the learning rate after each batch
  std::vector<at::Tensor> parameters;
};

struct Nothing {
  template <class Accelerator>
  void operator()(Accelerator&) const {}
};

// Batches first .. first + count - 1 of a run, then at_end(accelerator). A resumed run starts
// from other weights and generator states, which load_state must replace.
template <class Strategy, class Precision, class Sampler, class AtEnd = Nothing>
Run train(acc::AcceleratorOptions options, const Recipe& recipe, int first, int count,
          const std::filesystem::path& from = {}, const std::filesystem::path& to = {}, AtEnd at_end = {}) {
  acc::Accelerator<Strategy, Precision, Sampler> accelerator(std::move(options));
  accelerator.set_seed(from.empty() ? 0 : 999, /*device_specific=*/true);
  Net net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  torch::optim::StepLR sched(opt, recipe.scheduler_step_size, 0.5);
  auto [model, optimizer, loader, scheduler] =
      accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, acc::DataLoaderOptions(8).seed(5)), sched);
  if (!from.empty()) accelerator.load_state(from);
  Run run;
  int batch_index = first;
  while (static_cast<int>(run.losses.size()) < count) {
    for (auto& batch : loader) {
      auto step = accelerator.accumulate(model);
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      if (batch_index++ == recipe.overflow_at) loss = loss * std::numeric_limits<float>::infinity();
      accelerator.backward(loss);
      optimizer.step();
      scheduler.step();
      optimizer.zero_grad();
      run.losses.push_back(loss.template item<float>());
      if (auto* scaler = accelerator.scaler()) run.scales.push_back(scaler->scale_value());
      run.lrs.push_back(opt.param_groups()[0].options().get_lr());
      if (static_cast<int>(run.losses.size()) == count) break;
    }
  }
  if (!to.empty()) accelerator.save_state(to);
  at_end(accelerator);
  if constexpr (acc::shards_model_v<Strategy>)  // FSDP: the parameters in full, gathered from the shards
    for (const auto& [name, value] : accelerator.strategy().full_state(*net)) run.parameters.push_back(value.clone());
  else
    for (const auto& p : net->parameters()) run.parameters.push_back(p.detach().clone());
  return run;
}

}  // namespace resume
