// big_model_inference: a small GPT mapped onto memory budgets (acc::infer_auto_device_map),
// dispatched across them (acc::dispatch_model), and used for greedy decoding; it checks that the
// dispatched model generates the tokens the model generated before, and exits with 1 if not.
//
//   build/bin/big_model_inference --max_memory cpu=1MB,disk=10MB --offload_dir /tmp/offload
//
// With budgets too small for the whole model on the CPU, the last blocks go to disk: their weights
// are written once to <offload_dir>/blocks.N.safetensors and read for each of their calls.
#include "../common/flags.hpp"

#include <torch/torch.h>
#include <acc/acc.hpp>

#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Config {
  int64_t vocab = 256, dim = 64, heads = 4, layers = 8, context = 64;
};

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const Config& c)
      : torch::nn::Module("Block"),
        heads(c.heads),
        ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        qkv(register_module("qkv", torch::nn::Linear(c.dim, 3 * c.dim))),
        proj(register_module("proj", torch::nn::Linear(c.dim, c.dim))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        fc(register_module("fc", torch::nn::Linear(c.dim, 4 * c.dim))),
        out(register_module("out", torch::nn::Linear(4 * c.dim, c.dim))) {}
  at::Tensor forward(at::Tensor x) {
    const auto b = x.size(0), t = x.size(1), d = x.size(2);
    auto qkv_heads = qkv(ln1(x)).view({b, t, 3, heads, d / heads}).permute({2, 0, 3, 1, 4});
    auto scores = torch::matmul(qkv_heads[0], qkv_heads[1].transpose(-2, -1)) / std::sqrt(double(d / heads));
    const auto future = torch::ones({t, t}, torch::kBool).triu(1);
    auto y = torch::matmul(torch::softmax(scores.masked_fill(future, -std::numeric_limits<float>::infinity()), -1),
                           qkv_heads[2]);
    x = x + proj(y.transpose(1, 2).reshape({b, t, d}));
    return x + out(torch::gelu(fc(ln2(x))));
  }
  int64_t heads;
  torch::nn::LayerNorm ln1;
  torch::nn::Linear qkv, proj;
  torch::nn::LayerNorm ln2;
  torch::nn::Linear fc, out;
};
TORCH_MODULE(Block);

// The blocks are units (acc::Unit), which a device map can place apart; the embeddings, the final
// norm and the head are the model's own and stay on the execution device.
struct GptImpl : torch::nn::Module {
  explicit GptImpl(const Config& c)
      : tokens(register_module("tokens", torch::nn::Embedding(c.vocab, c.dim))),
        positions(register_module("positions", torch::nn::Embedding(c.context, c.dim))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        ln(register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        head(register_module("head", torch::nn::Linear(torch::nn::LinearOptions(c.dim, c.vocab).bias(false)))) {
    for (int64_t i = 0; i < c.layers; ++i) {
      units.emplace_back(Block(c));
      blocks->push_back(units.back());
    }
  }
  at::Tensor forward(const at::Tensor& ids) {
    auto x = tokens(ids) + positions(torch::arange(ids.size(1), ids.options()));
    for (auto& block : units) x = block(x);
    return head(ln(x));
  }
  torch::nn::Embedding tokens, positions;
  torch::nn::ModuleList blocks;
  std::vector<acc::Unit<Block>> units;
  torch::nn::LayerNorm ln;
  torch::nn::Linear head;
};
TORCH_MODULE(Gpt);

// "cpu=1MB,disk=10MB" -> {{"cpu", "600KB"}, {"disk", "10MB"}}.
acc::MaxMemory parse_max_memory(const std::string& text) {
  acc::MaxMemory budgets;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto equals = item.rfind('=');
    if (equals == std::string::npos)
      throw acc::Error("--max_memory '" + text +
                       "': write device=size pairs separated by commas, e.g. cpu=1MB,disk=10MB");
    budgets.emplace(item.substr(0, equals), item.substr(equals + 1));
  }
  return budgets;
}

// Greedy decoding without a cache: each step runs the whole sequence again.
template <class Model>
at::Tensor generate(Model& model, at::Tensor ids, int64_t new_tokens) {
  for (int64_t i = 0; i < new_tokens; ++i) {
    const auto next = model(ids).select(1, -1).argmax(-1, /*keepdim=*/true);
    ids = torch::cat({ids, next}, 1);
  }
  return ids;
}

}  // namespace

int run(int argc, char** argv) {
  std::string max_memory = "cpu=1MB,disk=10MB", offload_dir = "big_model_offload";
  int64_t new_tokens = 24, seed = 0;
  examples::Flags flags("big_model_inference",
                        "Maps a small GPT onto memory budgets, dispatches it, and checks that greedy decoding gives "
                        "the tokens of the undispatched model.");
  flags.add("--max_memory", max_memory, "device=size budgets: GPU indices, cpu, disk")
      .add("--offload_dir", offload_dir, "where disk-offloaded weights are written")
      .add("--new_tokens", new_tokens, "tokens to generate")
      .add("--seed", seed, "weights and prompt");
  flags.parse(argc, argv);

  torch::manual_seed(seed);
  const Config config;
  Gpt gpt(config);
  const auto prompt = torch::randint(config.vocab, {1, 8});
  torch::NoGradGuard no_grad;  // offloaded weights come and go: inference only

  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  const auto expected = generate(gpt, prompt, new_tokens);
  const std::chrono::duration<double> plain = Clock::now() - start;

  const auto map = acc::infer_auto_device_map(gpt, parse_max_memory(max_memory));
  std::cout << "device map: " << map << "\n";
  auto model = acc::dispatch_model(gpt, map, offload_dir);
  start = Clock::now();
  const auto tokens = generate(model, prompt, new_tokens);
  const std::chrono::duration<double> dispatched = Clock::now() - start;

  std::cout << new_tokens << " tokens: " << new_tokens / plain.count() << " tokens/s undispatched, "
            << new_tokens / dispatched.count() << " tokens/s dispatched\n";
  if (!at::equal(tokens, expected)) {
    std::cout << "the dispatched model generated other tokens than the undispatched model\n";
    return 1;
  }
  std::cout << "the same tokens as the undispatched model\n";
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const acc::Error& e) {  // a budget, map or flag that cannot work: the message says why
    std::cerr << "big_model_inference: " << e.what() << "\n";
    return 2;
  }
}
