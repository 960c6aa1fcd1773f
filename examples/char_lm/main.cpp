// char_lm: a small decoder-only transformer that learns to write text one byte at a time.
//
//   build/bin/char_lm --max_steps 200                  # trains on the fortunes package's files
//   build/bin/char_lm --data book.txt --mixed_precision bf16
//   build/bin/char_lm --log_with all --run_name runs/a     # metrics to runs/a (jsonl, csv, TensorBoard)
//
// The training loop is plain libtorch; the acc lines are marked.
#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/optim/adamw.h>
#include <boost/hana/flatten.hpp>
#include <boost/hana/tuple.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Settings {
  int64_t max_steps = 300;
  uint64_t seed = 42;
  int64_t batch_size = 32;
  double lr = 3e-3;
  std::optional<std::string> mixed_precision;  // default: the config's (acc config / acc launch)
  std::string data;                            // empty: the fortunes package's files
  int64_t block_size = 64;
  int64_t log_every = 50;
  std::vector<std::string> log_with;  // default: the config's (acc.log_with, ACC_LOG_WITH)
  std::string run_name = "char_lm";   // the trackers' directory, under the working directory
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "char_lm: " << message << "\n"
            << "usage: char_lm [--max_steps N] [--seed N] [--batch_size N] [--lr X] [--mixed_precision no|bf16]\n"
            << "               [--data FILE|DIR] [--block_size N] [--log_every N] [--log_with all|jsonl,csv,...]\n"
            << "               [--run_name DIR]\n";
  std::exit(2);
}

Settings parse(int argc, char** argv) {
  Settings s;
  const std::map<std::string, std::function<void(const std::string&)>> flags{
      {"--max_steps", [&](const std::string& v) { s.max_steps = std::stoll(v); }},
      {"--seed", [&](const std::string& v) { s.seed = std::stoull(v); }},
      {"--batch_size", [&](const std::string& v) { s.batch_size = std::stoll(v); }},
      {"--lr", [&](const std::string& v) { s.lr = std::stod(v); }},
      {"--mixed_precision", [&](const std::string& v) { s.mixed_precision = v; }},
      {"--data", [&](const std::string& v) { s.data = v; }},
      {"--block_size", [&](const std::string& v) { s.block_size = std::stoll(v); }},
      {"--log_every", [&](const std::string& v) { s.log_every = std::stoll(v); }},
      {"--log_with",
       [&](const std::string& v) {
         std::istringstream names(v);
         for (std::string name; std::getline(names, name, ',');) s.log_with.push_back(name);
       }},
      {"--run_name", [&](const std::string& v) { s.run_name = v; }},
  };
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto it = flags.find(flag);
    if (it == flags.end()) usage_error("unknown flag '" + flag + "'");
    if (i + 1 == argc) usage_error(flag + " needs a value");
    try {
      it->second(argv[++i]);
    } catch (const std::exception&) {
      usage_error(flag + "='" + argv[i] + "' is not a valid value");
    }
  }
  if (s.mixed_precision && *s.mixed_precision != "no" && *s.mixed_precision != "bf16")
    usage_error("--mixed_precision='" + *s.mixed_precision + "': use no or bf16");
  if (s.max_steps < 1 || s.batch_size < 1 || s.block_size < 2 || s.log_every < 1)
    usage_error("--max_steps, --batch_size, --log_every must be at least 1 and --block_size at least 2");
  return s;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// --data FILE, or every file without an extension in --data DIR (by default the fortune files
// of Debian's `fortunes` package), in name order so that every machine reads the same corpus.
std::string load_corpus(std::string path) {
  if (path.empty()) {
    path = "/usr/share/games/fortunes";
    if (!std::filesystem::is_directory(path))
      throw std::runtime_error("no --data given and " + path +
                               " is missing: install Debian's `fortunes` package (scripts/setup.sh does) or pass "
                               "--data FILE");
  }
  if (!std::filesystem::is_directory(path)) return read_text(path);
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(path))
    if (entry.is_regular_file() && entry.path().extension().empty()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& file : files) text += read_text(file.string());
  return text;
}

// Non-overlapping windows of block_size + 1 bytes: input is the first block_size, target the
// same shifted by one.
struct TextWindows {
  at::Tensor bytes;
  int64_t block_size;
  std::size_t size() const { return static_cast<std::size_t>((bytes.size(0) - 1) / block_size); }
  torch::data::Example<> get(std::size_t i) const {
    const auto window = bytes.narrow(0, static_cast<int64_t>(i) * block_size, block_size + 1);
    return {window.narrow(0, 0, block_size), window.narrow(0, 1, block_size)};
  }
};

struct CausalSelfAttentionImpl : torch::nn::Module {
  CausalSelfAttentionImpl(int64_t dim, int64_t heads)
      : heads(heads),
        qkv(register_module("qkv", torch::nn::Linear(dim, 3 * dim))),
        out(register_module("out", torch::nn::Linear(dim, dim))) {}
  at::Tensor forward(const at::Tensor& x) {
    const auto batch = x.size(0), seq = x.size(1), dim = x.size(2);
    auto split = qkv(x).view({batch, seq, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
    auto y = acc::compat::causal_attention(split[0], split[1], split[2]);
    return out(y.transpose(1, 2).reshape({batch, seq, dim}));
  }
  int64_t heads;
  torch::nn::Linear qkv, out;
};
TORCH_MODULE(CausalSelfAttention);

struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t dim, int64_t heads)
      : norm1(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        attention(register_module("attention", CausalSelfAttention(dim, heads))),
        norm2(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        up(register_module("up", torch::nn::Linear(dim, 4 * dim))),
        down(register_module("down", torch::nn::Linear(4 * dim, dim))) {}
  at::Tensor forward(at::Tensor x) {
    x = x + attention(norm1(x));
    return x + down(torch::gelu(up(norm2(x))));
  }
  torch::nn::LayerNorm norm1;
  CausalSelfAttention attention;
  torch::nn::LayerNorm norm2;
  torch::nn::Linear up, down;
};
TORCH_MODULE(Block);

struct CharLMImpl : torch::nn::Module {
  CharLMImpl(int64_t block_size, int64_t dim = 128, int64_t heads = 4, int64_t layers = 2)
      : tokens(register_module("tokens", torch::nn::Embedding(256, dim))),
        positions(register_module("positions", torch::nn::Embedding(block_size, dim))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        head(register_module("head", torch::nn::Linear(dim, 256))) {
    for (int64_t i = 0; i < layers; ++i) blocks->push_back(Block(dim, heads));
  }
  // bytes (batch, seq) -> next-byte logits (batch, seq, 256)
  at::Tensor forward(const at::Tensor& bytes) {
    auto x = tokens(bytes) + positions(torch::arange(bytes.size(1), bytes.options()));
    for (const auto& block : *blocks) x = block->as<Block>()->forward(x);
    return head(norm(x));
  }
  torch::nn::Embedding tokens, positions;
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm norm;
  torch::nn::Linear head;
};
TORCH_MODULE(CharLM);

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  using Strategy = typename Accelerator::strategy_type;
  using Precision = typename Accelerator::precision_type;
  accelerator.set_seed(s.seed);  // acc

  const std::string text = load_corpus(s.data);
  const auto bytes =
      torch::from_blob(const_cast<char*>(text.data()), {static_cast<int64_t>(text.size())}, at::kByte).to(at::kLong);
  TextWindows windows{bytes, s.block_size};
  if (windows.size() == 0) throw std::runtime_error("the text is shorter than one block; give more --data");

  CharLM net(s.block_size);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr).weight_decay(0.01));
  auto [model, optimizer, loader] =  // acc
      accelerator.prepare(net, opt, acc::DataLoader(windows, acc::DataLoaderOptions(s.batch_size).seed(s.seed)));

  accelerator.print("char_lm:", text.size(), "bytes,", windows.size(), "windows of", s.block_size, "on",
                    accelerator.num_processes(), "x", accelerator.device(), "strategy", Strategy::spelling(),
                    "precision", Precision::name);
  accelerator.init_trackers(s.run_name, {{"lr", s.lr},  // acc: the run's settings, for the trackers
                                         {"batch_size", s.batch_size},
                                         {"block_size", s.block_size},
                                         {"seed", s.seed},
                                         {"max_steps", s.max_steps}});
  // On a terminal, a progress line replaces the periodic step lines.
  acc::ProgressBar bar(
      acc::ProgressBarOptions(s.max_steps).description("char_lm").enabled(accelerator.is_main_process()));
  std::vector<double> losses;
  const auto start = std::chrono::steady_clock::now();
  while (static_cast<int64_t>(losses.size()) < s.max_steps) {
    for (auto& batch : loader) {
      optimizer.zero_grad();
      auto logits = model(batch.data);
      auto loss = torch::nn::functional::cross_entropy(logits.view({-1, 256}), batch.target.reshape({-1}));
      accelerator.backward(loss);  // acc
      optimizer.step();
      losses.push_back(loss.item().toDouble());
      const auto step = static_cast<int64_t>(losses.size());
      accelerator.log({{"loss", losses.back()}}, step);  // acc
      bar.set_postfix({{"loss", losses.back()}});
      bar.update();
      if (!bar.shown() && (step % s.log_every == 0 || step == s.max_steps)) {
        const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
        accelerator.print("step", step, "/", s.max_steps, "loss", losses.back(), "ms/step", elapsed.count() / step);
      }
      if (step == s.max_steps) break;
    }
  }
  // The last loss alone is one batch's; the mean of the last few steps says where training is.
  const std::size_t tail = std::min<std::size_t>(10, losses.size());
  double final_loss = 0;
  for (std::size_t i = losses.size() - tail; i < losses.size(); ++i)
    final_loss += losses[i] / static_cast<double>(tail);
  bar.close();
  accelerator.log(
      {{"final_loss", final_loss}, {"setup", std::string(Strategy::name) + " " + std::string(Precision::name)}},
      s.max_steps);
  accelerator.end_training();
  accelerator.print("first_loss=" + std::to_string(losses.front()));
  accelerator.print("final_loss=" + std::to_string(final_loss));
  return 0;
}

// Every strategy of this build, and DDP with PowerSGD's gradient compression (the config's
// acc.ddp_comm_hook: power_sgd).
constexpr auto kStrategies =
    boost::hana::flatten(boost::hana::make_tuple(acc::strategies<ACC_DEFAULT_STRATEGIES>
#if ACC_HAS_GLOO
                                                 ,
                                                 acc::strategies<acc::DDP<acc::Gloo, acc::PowerSGDHook>>
#endif
#if ACC_HAS_NCCL
                                                 ,
                                                 acc::strategies<acc::DDP<acc::Nccl, acc::PowerSGDHook>>
#endif
                                                 ));

}  // namespace

int main(int argc, char** argv) {
  const Settings settings = parse(argc, argv);
  try {
    // The strategy and precision come from the config (`acc config`, `acc launch` flags, the
    // environment); this program is built for both precisions it supports and every strategy.
    auto config = acc::Config::from_environment();  // acc
    if (settings.mixed_precision) config.mixed_precision = *settings.mixed_precision;
    config.sampler = "shuffled";
    if (!settings.log_with.empty()) config.log_with = settings.log_with;
    return acc::run(  // acc
        config, [&](auto& accelerator) { return train(accelerator, settings); }, kStrategies,
        acc::precisions<acc::FP32, acc::BF16>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "char_lm: " << e.what() << "\n";
    return 1;
  }
}
