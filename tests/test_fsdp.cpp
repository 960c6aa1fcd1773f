#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <string>
#include <vector>

#if ACC_HAS_GLOO  // the GPU builds have no Gloo; tests/dist runs FSDP over NCCL there

// FSDP in one process (world size 1, Gloo on an in-process store): how units are chosen, the
// errors that say how to fix a model, and training equal to Single's. The multi-process tests
// against DDP are in tests/dist/test_fsdp.cpp.
namespace {

struct LayerImpl : torch::nn::Module {
  LayerImpl()
      : a(register_module("a", torch::nn::Linear(16, 16))), b(register_module("b", torch::nn::Linear(16, 16))) {}
  at::Tensor forward(const at::Tensor& x) { return x + b(torch::relu(a(x))); }
  torch::nn::Linear a, b;
};
TORCH_MODULE(Layer);

struct ModelImpl : torch::nn::Module {
  ModelImpl() : head(register_module("head", torch::nn::Linear(16, 4))) {
    for (int i = 0; i < 2; ++i) layers.emplace_back(register_module("layer" + std::to_string(i), Layer()));
    plain = register_module("plain", Layer());  // a Layer not declared as a unit
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = plain(x);
    for (auto& layer : layers) h = layer(h);
    return head(h);
  }
  torch::nn::Linear head;
  std::vector<acc::Unit<Layer>> layers;
  Layer plain{nullptr};
};
TORCH_MODULE(Model);

acc::AcceleratorOptions alone(acc::FSDPOptions fsdp = {}) {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true).fsdp(fsdp);
}

using Fsdp = acc::Accelerator<acc::FSDP<acc::Gloo, acc::FullShard>>;

std::vector<std::string> units_of(acc::FSDPOptions fsdp, Model net = Model()) {
  Fsdp accelerator(alone(fsdp));
  auto model = accelerator.prepare(net);
  (void)model;
  return accelerator.strategy().unit_names();
}

using Wrap = acc::FSDPOptions::AutoWrap;

}  // namespace

TEST_CASE("FSDP units: declared acc::Units by default, filtered by the auto-wrap policy") {
  CHECK(units_of({}) == std::vector<std::string>{"(model)", "layer0", "layer1"});
  CHECK(units_of(acc::FSDPOptions().auto_wrap_policy(Wrap::no_wrap)) == std::vector<std::string>{"(model)"});
  CHECK(units_of(acc::FSDPOptions().auto_wrap_policy(Wrap::size_based).min_num_params(500)) ==
        std::vector<std::string>{"(model)", "layer0", "layer1"});
  CHECK(units_of(acc::FSDPOptions().auto_wrap_policy(Wrap::size_based).min_num_params(1000)) ==
        std::vector<std::string>{"(model)"});
  // The plain Layer matches the class too, but it is called directly: the error says what to do.
  CHECK_THROWS_WITH_AS(
      units_of(acc::FSDPOptions().auto_wrap_policy(Wrap::transformer_based).transformer_layer_cls_to_wrap({"Layer"})),
      doctest::Contains("LayerImpl) is of a class named in fsdp_transformer_layer_cls_to_wrap, "
                        "but C++ modules have no forward hooks"),
      acc::Error);
  CHECK_THROWS_WITH_AS(
      units_of(
          acc::FSDPOptions().auto_wrap_policy(Wrap::transformer_based).transformer_layer_cls_to_wrap({"BertLayer"})),
      doctest::Contains("names BertLayer but no module of the model has that class"), acc::Error);
}

TEST_CASE("FSDP units: a Sequential model's children are units") {
  torch::nn::Sequential net(torch::nn::Linear(16, 16), torch::nn::Functional(torch::relu), torch::nn::Linear(16, 4));
  Fsdp accelerator(alone());
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
  auto [model, optimizer] = accelerator.prepare(net, adamw);
  CHECK(accelerator.strategy().unit_names() == std::vector<std::string>{"0", "2"});
  const auto x = at::randn({3, 16});
  optimizer.zero_grad();
  accelerator.backward(model(x).pow(2).mean());
  optimizer.step();
  CHECK(model(x).sizes() == std::vector<int64_t>{3, 4});
}

TEST_CASE("FSDP in one process trains exactly as Single") {
  auto run = [](auto& accelerator) {
    torch::manual_seed(3);
    Model net;
    torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
    auto [model, optimizer] = accelerator.prepare(net, adamw);
    std::vector<float> losses;
    for (int step = 0; step < 10; ++step) {
      const auto x = at::full({4, 16}, 0.1 * step) + at::arange(16).to(at::kFloat) / 16;
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model(x), at::arange(4));
      accelerator.backward(loss);
      accelerator.clip_grad_norm_(net->parameters(), 1.0);
      optimizer.step();
      losses.push_back(loss.template item<float>());
    }
    return losses;
  };
  acc::Accelerator<acc::Single> single(alone());
  Fsdp fsdp(alone());
  const auto expected = run(single);
  const auto got = run(fsdp);
  CHECK(got == expected);
  CHECK(expected.back() < expected.front());
}

TEST_CASE("FSDP refuses an optimizer that stepped, and a unit split over parameter groups") {
  {
    Fsdp accelerator(alone());
    Model net;
    torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
    net->head(at::randn({2, 16})).sum().backward();
    adamw.step();
    auto model = accelerator.prepare(net);
    (void)model;
    CHECK_THROWS_WITH_AS(accelerator.prepare(adamw), doctest::Contains("has already stepped"), acc::Error);
  }
  Fsdp accelerator(alone());
  Model net;
  std::vector<torch::optim::OptimizerParamGroup> groups{torch::optim::OptimizerParamGroup({net->layers[0]->a->weight}),
                                                        torch::optim::OptimizerParamGroup({net->layers[0]->a->bias})};
  torch::optim::AdamW adamw(groups, torch::optim::AdamWOptions(0.01));
  auto model = accelerator.prepare(net);
  (void)model;
  CHECK_THROWS_WITH_AS(accelerator.prepare(adamw),
                       doctest::Contains("FSDP unit 'layer0' has parameters in two "
                                         "optimizer parameter groups"),
                       acc::Error);
}

#endif
