// The C++ twin of Accelerate's examples/torch_native_parallelism/nd_parallel.py: a small GPT trained
// over the device mesh that the config lays out (parallelism_config_*, or acc launch's
// --parallelism_config_* flags): its layers split over tp_size ranks by acc::tp::parallelize (with
// sequence parallelism under --sequence_parallel 1), and the data parallelism across the other
// ranks done by the config's strategy, DDP or FSDP, told the tp size. It checks what the script
// relies on: the loss falls, and the whole weights that save_model writes, loaded into an unsplit
// model on the main process, give the split model's evaluation loss.
//
//   build/bin/acc launch --cpu --num_processes 4 --parallelism_config_tp_size 2 build/bin/nd_parallel
#include "../common/flags.hpp"

#include <acc/acc.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/stack.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/optim/adamw.h>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace {

struct Settings {
  int64_t steps = 40;
  int64_t batch_size = 8;  // sequences per data-parallel rank and step
  int64_t context = 16;
  double lr = 3e-3;
  int64_t sequence_parallel = 0;
  int64_t seed = 0;
  std::string output_dir = "nd_parallel_output";
};

constexpr int64_t kVocabulary = 64, kEmbed = 64, kHeads = 4;

// Pre-norm attention and MLP in acc::nn layers, written as for one process: the local head count
// comes from the q, k, v projection's out_features, the sequence length from its output.
struct BlockImpl : torch::nn::Module {
  BlockImpl() : head_dim(kEmbed / kHeads) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kEmbed})));
    qkv = register_module("qkv", acc::nn::Linear(kEmbed, 3 * kEmbed));
    proj = register_module("proj", acc::nn::Linear(kEmbed, kEmbed));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kEmbed})));
    fc = register_module("fc", acc::nn::Linear(kEmbed, 4 * kEmbed));
    out = register_module("out", acc::nn::Linear(4 * kEmbed, kEmbed));
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t heads = qkv->options.out_features() / 3 / head_dim;
    auto parts = qkv(ln1(x)).chunk(3, -1);
    const int64_t batch = parts[0].size(0), time = parts[0].size(1);
    for (auto& part : parts) part = part.reshape({batch, time, heads, head_dim}).transpose(1, 2);
    auto scores = parts[0].matmul(parts[1].transpose(-2, -1)) / std::sqrt(double(head_dim));
    const auto future = at::ones({time, time}, x.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
    auto attended = scores.softmax(-1).matmul(parts[2]).transpose(1, 2).reshape({batch, time, heads * head_dim});
    auto h = x + proj(attended);
    return h + out(at::gelu(fc(ln2(h))));
  }
  int64_t head_dim;
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  acc::nn::Linear qkv{nullptr}, proj{nullptr}, fc{nullptr}, out{nullptr};
};
TORCH_MODULE(Block);

struct GptImpl : torch::nn::Module {
  explicit GptImpl(int64_t context) {
    tok = register_module("tok", acc::nn::Embedding(kVocabulary, kEmbed));
    pos = register_module("pos", acc::nn::Embedding(context, kEmbed));
    blocks = register_module("blocks", torch::nn::ModuleList(Block(), Block()));
    ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kEmbed})));
    head = register_module("head", acc::nn::Linear(torch::nn::LinearOptions(kEmbed, kVocabulary).bias(false)));
  }
  at::Tensor forward(const at::Tensor& ids) {
    auto x = tok(ids) + pos(at::arange(ids.size(1), ids.options()).expand_as(ids));
    for (const auto& block : *blocks) x = block->as<BlockImpl>()->forward(x);
    return head(ln_f(x));  // this rank's slice of the vocabulary when head is split
  }
  acc::nn::Embedding tok{nullptr}, pos{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
  acc::nn::Linear head{nullptr};
};
TORCH_MODULE(Gpt);

acc::tp::Plan plan(bool sequence_parallel) {
  using acc::tp::colwise, acc::tp::rowwise;
  if (!sequence_parallel)
    return {{"tok", rowwise},           {"blocks.*.qkv", colwise.fused(3).heads(kHeads)},
            {"blocks.*.proj", rowwise}, {"blocks.*.fc", colwise},
            {"blocks.*.out", rowwise},  {"head", colwise}};
  return {{"tok", rowwise.sequence_parallel()},
          {"pos", rowwise.sequence_parallel()},
          {"blocks.*.ln?", acc::tp::sequence_parallel},
          {"blocks.*.qkv", colwise.fused(3).heads(kHeads).sequence_parallel()},
          {"blocks.*.proj", rowwise.sequence_parallel()},
          {"blocks.*.fc", colwise.sequence_parallel()},
          {"blocks.*.out", rowwise.sequence_parallel()},
          {"ln_f", acc::tp::sequence_parallel},
          {"head", colwise.sequence_parallel()}};
}

// Token sequences counting up from a random start: a task the model learns within the run.
struct Sequences {
  int64_t count, context;
  std::size_t size() const { return static_cast<std::size_t>(count); }
  at::Tensor get(std::size_t i) const {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(1000 + i);
    const auto start = at::randint(kVocabulary, {1}, generator, at::kLong);
    return (start + at::arange(context + 1, at::kLong)).remainder(kVocabulary);
  }
};

template <class Accelerator>
int train(Accelerator& accelerator, const acc::Config& config, const Settings& s) {
  using Comm = std::decay_t<decltype(accelerator.strategy().comm())>;
  const auto env = acc::ProcessEnvironment::from_environment();
  acc::DeviceMesh<Comm> mesh(env, acc::MeshShape::from_config(config, env.world_size));  // acc
  const int dp_size = mesh.dp_group().size();

  at::manual_seed(static_cast<uint64_t>(s.seed));  // every rank builds the same full model
  Gpt gpt(s.context);
  if (config.tp_size > 1) acc::tp::parallelize(*gpt, mesh, plan(s.sequence_parallel != 0));  // acc
  torch::optim::AdamW adamw(gpt->parameters(), torch::optim::AdamWOptions(s.lr));
  const Sequences data{s.steps * s.batch_size * dp_size, s.context};
  auto [model, optimizer, loader] = accelerator.prepare(gpt, adamw, acc::DataLoader(data, s.batch_size));  // acc

  // The loss of the vocabulary-parallel logits, whole on every rank of a tp group.
  const auto loss_of = [&](auto& net, const at::Tensor& tokens) {
    const auto inputs = tokens.narrow(1, 0, s.context), targets = tokens.narrow(1, 1, s.context);
    return acc::tp::vocab_parallel_cross_entropy(net(inputs), targets, mesh.tp()).mean();  // acc
  };
  double first = 0, last = 0;
  for (auto& tokens : loader) {
    optimizer.zero_grad();
    const auto loss = loss_of(model, tokens);
    accelerator.backward(loss);                           // acc
    accelerator.clip_grad_norm_(gpt->parameters(), 1.0);  // acc: the whole model's norm
    optimizer.step();
    last = acc::item<double>(loss);
    if (first == 0) first = last;
  }

  // The same evaluation batch on every rank, then the whole weights in Hugging Face's layout.
  std::vector<at::Tensor> rows;
  for (std::size_t i = 0; i < 8; ++i) rows.push_back(Sequences{8, s.context}.get(data.size() + i));
  const auto evaluation = at::stack(rows).to(accelerator.device());
  double split_loss = 0;
  {
    at::NoGradGuard no_grad;
    split_loss = acc::item<double>(loss_of(model, evaluation));
  }
  const auto dir = std::filesystem::path(s.output_dir) / ("model_" + std::to_string(getppid()));
  accelerator.save_model(model, dir);  // acc: the slices joined
  accelerator.print("mesh", acc::MeshShape::from_config(config, env.world_size).describe(), "strategy",
                    accelerator.distributed_type(), "sequence parallel", s.sequence_parallel != 0 ? "yes" : "no",
                    "loss", first, "->", last);
  int failed = last < first ? 0 : 1;
  if (accelerator.is_main_process()) {
    at::manual_seed(static_cast<uint64_t>(s.seed) + 1);  // other weights, which the checkpoint replaces
    Gpt whole(s.context);
    acc::load_checkpoint_in_model(*whole, dir);  // acc
    whole->to(accelerator.device());
    at::NoGradGuard no_grad;
    [[maybe_unused]] const auto scope = accelerator.autocast();  // as the prepared model's forward runs
    const auto logits = whole->forward(evaluation.narrow(1, 0, s.context));
    const double whole_loss = acc::item<double>(torch::nn::functional::cross_entropy(
        logits.reshape({-1, kVocabulary}).to(at::kFloat), evaluation.narrow(1, 1, s.context).reshape(-1)));
    // In fp32 the two differ by summation order only: rounding of 6e-8 relative, over dot products
    // of at most 256 terms, through about 10 layers, is below 2e-4 relative; a wrong slice or a
    // lost reduction moves the loss by percents. In bf16 each layer's output rounds to 2^-8 = 4e-3
    // relative, which about 10 layers keep below 5e-2: there the check catches gross errors only.
    const double tolerance = accelerator.mixed_precision() == "no" ? 2e-4 : 5e-2;
    accelerator.print("evaluation loss: split", split_loss, "whole weights reloaded", whole_loss);
    if (std::abs(split_loss - whole_loss) > tolerance * whole_loss) failed = 1;
    std::filesystem::remove_all(dir);
  }
  failed = acc::item<int>(accelerator.reduce(at::full({1}, failed, at::kInt), acc::ReduceOp::max));  // acc
  if (failed != 0)
    std::cerr << "nd_parallel: expected the loss to fall and the saved whole weights to give the split model's loss\n";
  return failed;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("nd_parallel", "Trains a small GPT over the config's device mesh: tensor x data parallelism.")
      .add("--steps", s.steps, "optimizer steps")
      .add("--batch_size", s.batch_size, "sequences per data-parallel rank and step")
      .add("--context", s.context, "tokens per sequence (a multiple of the tp size with sequence parallelism)")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--sequence_parallel", s.sequence_parallel, "1: sequence parallelism between the split layers")
      .add("--seed", s.seed, "seed of the model")
      .add("--output_dir", s.output_dir, "where the whole weights are written, then removed")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    return acc::run(                                // acc
        config, [&](auto& accelerator) { return train(accelerator, config, s); },
#if ACC_HAS_GLOO && ACC_HAS_NCCL
        acc::strategies<acc::CPU, acc::DDP<acc::Nccl>, acc::FSDP<acc::Nccl>>,
#elif ACC_HAS_NCCL
        acc::strategies<acc::DDP<acc::Nccl>, acc::FSDP<acc::Nccl>>,
#else
        acc::strategies<acc::CPU>,  // CMake builds this example only with Gloo or NCCL
#endif
        acc::precisions<acc::FP32, acc::BF16>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "nd_parallel: " << e.what() << "\n";
    return 1;
  }
}
