// with_run.cpp's program written in plain libtorch, with the includes it needs and no more: one
// process, fp32, libtorch's own data loader and torch::save/torch::load for the checkpoint. What
// the same training loop costs to compile without accelerate-cpp (bench/compile_cost.sh times it).
#include <torch/data/dataloader.h>
#include <torch/data/datasets/base.h>
#include <torch/data/datasets/map.h>
#include <torch/data/transforms/stack.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/functional.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <cstddef>
#include <filesystem>
#include <string>

struct Noise : torch::data::datasets::Dataset<Noise> {
  torch::optional<std::size_t> size() const override { return 64; }
  torch::data::Example<> get(std::size_t) override { return {torch::randn({8}), torch::randint(0, 3, {}, at::kLong)}; }
};

int main(int argc, char** argv) {
  torch::nn::Sequential net(torch::nn::Linear(8, 16), torch::nn::Functional(torch::relu), torch::nn::Linear(16, 3));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-3));
  auto loader = torch::data::make_data_loader(Noise{}.map(torch::data::transforms::Stack<>()), 8);
  const std::string dir = argc > 1 ? argv[1] : "checkpoint";
  if (argc > 1) {
    torch::load(net, dir + "/model.pt");
    torch::load(opt, dir + "/optimizer.pt");
  }
  for (auto& batch : *loader) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(batch.data), batch.target).backward();
    opt.step();
  }
  std::filesystem::create_directories(dir);  // as save_state makes its directory
  torch::save(net, dir + "/model.pt");
  torch::save(opt, dir + "/optimizer.pt");
  return 0;
}
