// A whole training program whose Accelerator is chosen at run time by acc::run over the default
// set of combinations, with checkpointing: what a user's main.cpp costs to compile
// (bench/compile_cost.sh times it).
#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/functional.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

struct Noise {
  std::size_t size() const { return 64; }
  torch::data::Example<> get(std::size_t) const { return {torch::randn({8}), torch::randint(0, 3, {}, at::kLong)}; }
};

int main(int argc, char** argv) {
  return acc::run(acc::Config::from_environment(), [&](auto& accelerator) {
    torch::nn::Sequential net(torch::nn::Linear(8, 16), torch::nn::Functional(torch::relu), torch::nn::Linear(16, 3));
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-3));
    auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(Noise{}, 8));
    if (argc > 1) accelerator.load_state(argv[1]);
    for (auto& batch : loader) {
      optimizer.zero_grad();
      accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));
      optimizer.step();
    }
    accelerator.wait_for_everyone();
    accelerator.save_state();
    return 0;
  });
}
