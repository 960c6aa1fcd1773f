// Tensor parallelism over real processes: acc::DeviceMesh's arrangement, groups and errors, and
// acc::tp's layers against one process: acc::nn::Embedding against torch's, the vocabulary-parallel
// embedding and cross-entropy, gathered and split Linear layers, a small GPT split over every rank
// (tp = world size, with and without sequence parallelism) and the same split over tp groups of 2
// with data parallelism across them (acc::tp::DataParallel, or DDP through the Accelerator), or
// sharded across them by FSDP through the Accelerator (Gloo only), each trained 20 AdamW steps.
// Run by ctest dist/device_mesh_4_ranks (`acc_dist_worker --no-skip -ts=device_mesh`),
// dist/tp_{2,4}_ranks (`-ts=tp`) and dist/tp_dp_4_ranks (`-ts=tp_dp,tp_accelerator`), over Gloo, or
// NCCL with ACC_TEST_BACKEND=nccl; checkpoints resumed on another number of processes by
// dist/tp_resume_other_process_counts (`-ts=tp_resume`, phase by phase).
#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include "../error_of.hpp"

#include <acc/checkpoint/load_checkpoint_in_model.hpp>
#include <acc/checkpoint/model_files.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/tp_sharded_state.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/detail/torch_compat.hpp>
#include <acc/mesh/device_mesh.hpp>
#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/tp/cross_entropy.hpp>
#include <acc/tp/data_parallel.hpp>
#include <acc/tp/full_state.hpp>
#include <acc/tp/parallelize.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/optim/adamw.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

namespace fs = std::filesystem;

// The float64 rounding by which a split computation may differ from one process: the sums it
// orders differently (partial products of a row-parallel layer summed by the all-reduce instead of
// in one dot product; the loss's per-rank sums of exponentials) have at most 128 terms of
// magnitude below 10 (roundoff 1.1e-16 each), compounded through at most 10 layers. A wrong shard
// or a lost reduction differs by orders of magnitude more (O(0.01) and up).
constexpr double kRounding = 128 * 1.1e-16 * 10 * 10;
constexpr int kSteps = 20;
constexpr double kLr = 1e-3;
// AdamW turns a gradient difference d into up to lr * d / eps per step (worker.hpp says why these
// comparisons train in float64).
constexpr double kParameterDrift = kSteps * kLr * kRounding / 1e-8;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// max |a - b| <= tolerance * max(1, max |b|).
void check_close(const at::Tensor& a, const at::Tensor& b, double tolerance, const std::string& what) {
  CAPTURE(what);
  REQUIRE(a.sizes() == b.sizes());
  const double scale = std::max(1.0, b.abs().max().item<double>());
  const double difference = (a - b).abs().max().item<double>();
  CAPTURE(difference);
  CHECK(difference <= tolerance * scale);
}

// This rank's slice of `dim` of `full`, seen as `parts` equal blocks each sliced on its own.
at::Tensor slice_of(const at::Tensor& full, int64_t dim, int64_t parts, int rank, int ranks) {
  std::vector<at::Tensor> pieces;
  for (const auto& block : full.chunk(parts, dim)) pieces.push_back(block.chunk(ranks, dim)[rank]);
  return at::cat(pieces, dim);
}

template <class Fn>
void with_world(Fn&& fn) {
  with_accelerator([&](auto& accelerator) {
    using Comm = std::decay_t<decltype(accelerator.strategy().comm())>;
    fn(acc::ProcessEnvironment::from_environment(), accelerator.device(), static_cast<Comm*>(nullptr));
    accelerator.wait_for_everyone();
  });
}

struct GptConfig {
  int64_t vocabulary = 64;
  int64_t context = 8;
  int64_t embed = 32;
  int64_t heads = 4;
};

// Pre-norm attention and MLP, written as for one process: the local head count comes from the
// fused q, k, v projection's out_features, which tensor parallelism makes this rank's share, and
// the sequence length from its output, where sequence parallelism has gathered the sequence.
struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const GptConfig& config)
      : head_dim(config.embed / config.heads),
        ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.embed})))),
        qkv(register_module("qkv", acc::nn::Linear(config.embed, 3 * config.embed))),
        proj(register_module("proj", acc::nn::Linear(config.embed, config.embed))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.embed})))),
        fc(register_module("fc", acc::nn::Linear(config.embed, 4 * config.embed))),
        out(register_module("out", acc::nn::Linear(4 * config.embed, config.embed))) {}

  at::Tensor forward(const at::Tensor& x) {
    const int64_t local_heads = qkv->options.out_features() / 3 / head_dim;
    const auto parts = qkv(ln1(x)).chunk(3, -1);
    const int64_t batch = parts[0].size(0), time = parts[0].size(1);
    const auto by_head = [&](const at::Tensor& t) {
      return t.reshape({batch, time, local_heads, head_dim}).transpose(1, 2);
    };
    auto scores = by_head(parts[0]).matmul(by_head(parts[1]).transpose(-2, -1)) / std::sqrt(double(head_dim));
    const auto future = at::ones({time, time}, x.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
    const auto attended =
        scores.softmax(-1).matmul(by_head(parts[2])).transpose(1, 2).reshape({batch, time, local_heads * head_dim});
    const auto h = x + proj(attended);
    return h + out(at::gelu(fc(ln2(h))));
  }

  int64_t head_dim;
  torch::nn::LayerNorm ln1;
  acc::nn::Linear qkv, proj;
  torch::nn::LayerNorm ln2;
  acc::nn::Linear fc, out;
};
TORCH_MODULE(Block);

struct GptImpl : torch::nn::Module {
  explicit GptImpl(const GptConfig& config)
      : tok(register_module("tok", acc::nn::Embedding(config.vocabulary, config.embed))),
        pos(register_module("pos", acc::nn::Embedding(config.context, config.embed))),
        blocks(register_module("blocks", torch::nn::ModuleList(Block(config), Block(config)))),
        ln_f(register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.embed})))),
        head(register_module("head",
                             acc::nn::Linear(torch::nn::LinearOptions(config.embed, config.vocabulary).bias(false)))) {}

  // Logits: the whole vocabulary on one process, this rank's slice when `head` is split. Positions
  // are looked up per token, so that under sequence parallelism `pos` gives this rank's.
  at::Tensor forward(const at::Tensor& ids) {
    auto x = tok(ids) + pos(at::arange(ids.size(1), ids.options()).expand_as(ids));
    for (const auto& block : *blocks) x = block->as<BlockImpl>()->forward(x);
    return head(ln_f(x));
  }

  acc::nn::Embedding tok, pos;
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm ln_f;
  acc::nn::Linear head;
};
TORCH_MODULE(Gpt);

// The GPT from `seed` in float64 on `device`: every rank that builds it from the same seed holds the
// same full model.
Gpt float64_gpt(uint64_t seed, c10::Device device = c10::kCPU) {
  at::manual_seed(seed);
  Gpt gpt(GptConfig{});
  gpt->to(device, at::kDouble);
  return gpt;
}

// The optimizer every comparison here trains with, on both sides.
torch::optim::AdamWOptions gpt_adamw() { return torch::optim::AdamWOptions(kLr).weight_decay(0.01); }

acc::tp::Plan gpt_plan(const GptConfig& config) {
  return {{"tok", acc::tp::rowwise},           {"blocks.*.qkv", acc::tp::colwise.fused(3).heads(config.heads)},
          {"blocks.*.proj", acc::tp::rowwise}, {"blocks.*.fc", acc::tp::colwise},
          {"blocks.*.out", acc::tp::rowwise},  {"head", acc::tp::colwise}};
}

// gpt_plan with sequence parallelism: between the split layers each rank holds its slice of the
// sequence, the layer norms' gradients summed over the group.
acc::tp::Plan gpt_sequence_plan(const GptConfig& config) {
  using acc::tp::colwise, acc::tp::rowwise;
  return {{"tok", rowwise.sequence_parallel()},
          {"pos", rowwise.sequence_parallel()},
          {"blocks.*.ln?", acc::tp::sequence_parallel},
          {"blocks.*.qkv", colwise.fused(3).heads(config.heads).sequence_parallel()},
          {"blocks.*.proj", rowwise.sequence_parallel()},
          {"blocks.*.fc", colwise.sequence_parallel()},
          {"blocks.*.out", rowwise.sequence_parallel()},
          {"ln_f", acc::tp::sequence_parallel},
          {"head", colwise.sequence_parallel()}};
}

// The part of the full model's parameter `name` this rank holds under gpt_plan (gpt_sequence_plan
// with `sequence`): the expected sharding, written out independently of acc::tp's.
at::Tensor expected_shard(const std::string& name, const at::Tensor& full, int rank, int ranks, bool sequence = false) {
  const auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("qkv.weight") || ends_with("qkv.bias")) return slice_of(full, 0, 3, rank, ranks);
  if (ends_with("fc.weight") || ends_with("fc.bias") || name == "head.weight" || name == "tok.weight" ||
      (sequence && name == "pos.weight"))
    return slice_of(full, 0, 1, rank, ranks);
  if (ends_with("proj.weight") || ends_with("out.weight")) return slice_of(full, 1, 1, rank, ranks);
  return full;  // replicated: layer norms, positions, row-parallel biases
}

// The trained split model's whole weights (acc::tp::full_state) are the whole model's, in its order;
// written in Hugging Face's layout they load into an unsplit model; cut again (load_full_state),
// every rank gets its slices back, bit for bit.
template <class Comm, class Build>
void check_whole_weights(const Gpt& whole, const Gpt& split, acc::DeviceMesh<Comm>& mesh, const Build& build) {
  const int tp_rank = mesh.coordinate(acc::MeshDim::tp), tp_size = mesh.size(acc::MeshDim::tp);
  const auto gathered = acc::tp::full_state(*split, mesh.tp());
  const auto expected = acc::detail::module_state(*whole);
  REQUIRE(gathered.size() == expected.size());
  std::map<std::string, at::Tensor> by_name;
  for (std::size_t i = 0; i < gathered.size(); ++i) {
    CHECK(gathered[i].first == expected[i].first);
    check_close(gathered[i].second, expected[i].second, kParameterDrift, gathered[i].first + ", gathered");
    by_name[gathered[i].first] = gathered[i].second;
  }
  if (mesh.global_rank() == 0) {  // one writer, as save_model
    const auto dir = fs::temp_directory_path() / ("acc_tp_weights_" + std::to_string(::getpid()));
    acc::save_model_files(gathered, dir, "4KB");  // several shards and their index
    CHECK(fs::exists(dir / acc::weights::kIndexFile));
    Gpt unsplit = build();
    acc::load_checkpoint_in_model(*unsplit, dir);
    for (const auto& [name, tensor] : acc::detail::module_state(*unsplit))
      CHECK_MESSAGE(at::equal(tensor, by_name.at(name)), name);
    fs::remove_all(dir);
  }
  Gpt fresh = build();
  acc::tp::parallelize(*fresh, mesh, gpt_plan(GptConfig{}));
  acc::tp::load_full_state(*fresh, mesh.tp(), by_name);
  for (const auto& [name, tensor] : acc::detail::module_state(*fresh))
    CHECK_MESSAGE(at::equal(tensor, expected_shard(name, by_name.at(name), tp_rank, tp_size)), name);

  auto missing = by_name;
  missing.erase("blocks.1.qkv.bias");
  CHECK(error_of([&] { acc::tp::load_full_state(*fresh, mesh.tp(), missing); }) ==
        "acc::tp::load_full_state: the state has no 'blocks.1.qkv.bias'; give the whole model's state "
        "(acc::tp::full_state, or the unsplit model's checkpoint)");
  auto misshapen = by_name;
  misshapen["head.weight"] = expected_shard("head.weight", by_name.at("head.weight"), 0, tp_size);
  const auto head = by_name.at("head.weight");
  CHECK(error_of([&] { acc::tp::load_full_state(*fresh, mesh.tp(), misshapen); }) ==
        "acc::tp::load_full_state: 'head.weight' is " + acc::detail::shape_text(misshapen["head.weight"]) +
            " in the state, but the unsplit model's is " + acc::detail::shape_text(head));
}

// AdamW's state of each parameter, in parameter order: its step count, exp_avg and exp_avg_sq.
std::vector<at::Tensor> adamw_state(const torch::optim::AdamW& optimizer, const torch::nn::Module& model) {
  using StateMap = std::decay_t<decltype(optimizer.state())>;
  std::vector<at::Tensor> state;
  for (const auto& parameter : model.parameters()) {
    const auto& own = static_cast<const torch::optim::AdamWParamState&>(
        *optimizer.state().at(acc::compat::optimizer_state_key<StateMap>(parameter)));
    state.push_back(at::full({}, static_cast<double>(own.step()), at::kDouble));
    state.push_back(own.exp_avg());
    state.push_back(own.exp_avg_sq());
  }
  return state;
}

// Each rank's slices and optimizer state saved as held (acc::tp::save_sharded_state, no gathering,
// by the tp group of dp rank 0) resume a fresh split model and optimizer on every rank bit for bit;
// acc merge-weights joins the files into whole weights equal to acc::tp::full_state's; a file of
// another tp size, another plan, or a checkpoint without the optimizer asked for one are errors.
template <class Comm, class Build>
void check_sharded_state(const Gpt& split, const torch::optim::AdamW& optimizer, acc::DeviceMesh<Comm>& mesh,
                         const Build& build, const torch::optim::AdamWOptions& adamw) {
  const int tp_rank = mesh.coordinate(acc::MeshDim::tp), tp_size = mesh.size(acc::MeshDim::tp);
  // One directory for the job: the port acc launch chose is the job's own.
  const auto dir = fs::temp_directory_path() /
                   ("acc_tp_shards_" + std::to_string(acc::ProcessEnvironment::from_environment().master_port));
  const bool saver = mesh.dp_group().rank() == 0;
  if (saver) acc::tp::save_sharded_state(*split, mesh.tp(), dir, &optimizer);
  mesh.dp().barrier();  // the other dp ranks read what dp rank 0's tp group wrote

  Gpt fresh = build();
  torch::optim::AdamW fresh_optimizer(fresh->parameters(), adamw);
  acc::tp::parallelize(*fresh, mesh, gpt_plan(GptConfig{}));
  acc::tp::load_sharded_state(*fresh, mesh.tp(), dir, &fresh_optimizer);
  const auto saved = acc::detail::module_state(*split), loaded = acc::detail::module_state(*fresh);
  REQUIRE(saved.size() == loaded.size());
  for (std::size_t i = 0; i < saved.size(); ++i)
    CHECK_MESSAGE(at::equal(saved[i].second, loaded[i].second), saved[i].first);
  const auto saved_state = adamw_state(optimizer, *split), loaded_state = adamw_state(fresh_optimizer, *fresh);
  REQUIRE(saved_state.size() == loaded_state.size());
  for (std::size_t i = 0; i < saved_state.size(); ++i) CHECK(at::equal(saved_state[i], loaded_state[i]));

  // acc merge-weights (run by one rank, from the acc beside this worker) joins the slices as
  // full_state does.
  const auto whole = acc::tp::full_state(*split, mesh.tp());
  if (mesh.global_rank() == 0) {
    const auto acc_tool = fs::read_symlink("/proc/self/exe").parent_path() / "acc";
    const auto merged = dir.string() + "_merged";
    const auto command = acc_tool.string() + " merge-weights " + dir.string() + " " + merged + " > /dev/null";
    REQUIRE(std::system(command.c_str()) == 0);
    Gpt unsplit = build();
    acc::load_checkpoint_in_model(*unsplit, merged);
    const auto merged_state = acc::detail::module_state(*unsplit);
    REQUIRE(merged_state.size() == whole.size());
    for (std::size_t i = 0; i < whole.size(); ++i)
      CHECK_MESSAGE(at::equal(merged_state[i].second, whole[i].second), whole[i].first);
    fs::remove_all(merged);
  }

  const auto file = acc::tp::detail::model_shard_file(dir, tp_rank).string();
  CHECK(error_of([&] { acc::tp::detail::load_sharded_state(*fresh, nullptr, dir, tp_rank, 2 * tp_size); }) ==
        "acc::tp::load_sharded_state: '" + file + "' holds rank " + std::to_string(tp_rank) + " of a tp group of " +
            std::to_string(tp_size) + ", and this process is rank " + std::to_string(tp_rank) + " of " +
            std::to_string(2 * tp_size) +
            "; load a checkpoint that acc::tp::save_sharded_state wrote on every rank of a tp group of this size, or "
            "whole weights with acc::tp::load_full_state (acc merge-weights " +
            dir.string() + " OUT joins these files into them)");
  Gpt whole_head = build();  // the plan without the head's split
  auto plan = gpt_plan(GptConfig{});
  plan.pop_back();
  acc::tp::parallelize(*whole_head, mesh, plan);
  CHECK(error_of([&] { acc::tp::load_sharded_state(*whole_head, mesh.tp(), dir); }) ==
        "acc::tp::load_sharded_state: 'head.weight' is split [0, 1] in '" + file +
            "' but whole in this model: split the model with the plan it was saved with");
  mesh.dp().barrier();  // every rank has read the files
  if (saver) {
    fs::remove(acc::tp::detail::optimizer_shard_file(dir, tp_rank));
    CHECK(error_of([&] { acc::tp::load_sharded_state(*fresh, mesh.tp(), dir, &fresh_optimizer); }) ==
          "acc::tp::load_sharded_state: '" + acc::tp::detail::optimizer_shard_file(dir, tp_rank).string() +
              "' does not exist: the checkpoint was saved without the optimizer; load it without one");
  }
  mesh.tp().barrier();
  if (mesh.global_rank() == 0) fs::remove_all(dir);
}

// Splits a GPT over the mesh's tp group (with sequence parallelism if `sequence`) and trains it 20
// AdamW steps, each dp rank on its share of every batch (gradients averaged over the dp group by
// acc::tp::DataParallel when it has more than one rank), against the whole model trained on whole
// batches in this process: the same loss, logits and gradients in the first step, the same
// parameters after the last, within rounding. Without sequence parallelism, also its checkpoints.
template <class Comm>
void check_gpt_against_one_process(acc::DeviceMesh<Comm>& mesh, c10::Device device, bool sequence = false) {
  const int tp_rank = mesh.coordinate(acc::MeshDim::tp), tp_size = mesh.size(acc::MeshDim::tp);
  const int dp_rank = mesh.dp_group().rank(), dp_size = mesh.dp_group().size();
  const GptConfig config;
  const auto build = [&] { return float64_gpt(0, device); };
  Gpt whole = build();
  Gpt split = build();
  const auto adamw = gpt_adamw();
  torch::optim::AdamW whole_optimizer(whole->parameters(), adamw);
  // Built before the split: the parameters stay the same tensor objects, resized.
  torch::optim::AdamW split_optimizer(split->parameters(), adamw);
  // The split layers: tok, each block's qkv, proj, fc and out, head; and pos with sequence parallelism.
  const auto plan = sequence ? gpt_sequence_plan(config) : gpt_plan(config);
  CHECK(acc::tp::parallelize(*split, mesh, plan).size() == (sequence ? 11 : 10));
  CHECK(split->blocks[0]->as<BlockImpl>()->qkv->options.out_features() == 3 * config.embed / tp_size);
  std::optional<acc::tp::DataParallel<Comm>> data_parallel;
  if (dp_size > 1) data_parallel.emplace(*split, mesh.dp());

  const auto whole_parameters = whole->named_parameters();
  const auto split_parameters = split->named_parameters();
  for (const auto& parameter : split_parameters)
    CHECK(at::equal(parameter.value(),
                    expected_shard(parameter.key(), whole_parameters[parameter.key()], tp_rank, tp_size, sequence)));

  constexpr int64_t share = 4;  // sequences per dp rank and step
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    // The same batches on every rank: sequences counting up from random starts, which the model
    // can learn (its loss falls), unlike random tokens.
    at::manual_seed(1000 + step);
    const auto starts = at::randint(config.vocabulary, {share * dp_size, 1}, at::kLong);
    const auto tokens = (starts + at::arange(config.context + 1, at::kLong)).remainder(config.vocabulary).to(device);
    const auto inputs = tokens.narrow(1, 0, config.context), targets = tokens.narrow(1, 1, config.context);
    whole_optimizer.zero_grad();
    data_parallel ? data_parallel->zero_grad() : split_optimizer.zero_grad();
    const auto whole_logits = whole->forward(inputs);
    const auto expected =
        torch::nn::functional::cross_entropy(whole_logits.reshape({-1, config.vocabulary}), targets.reshape(-1));
    const auto split_logits = split->forward(inputs.narrow(0, dp_rank * share, share));
    const auto own_targets = targets.narrow(0, dp_rank * share, share);
    const auto loss = acc::tp::vocab_parallel_cross_entropy(split_logits, own_targets, mesh.tp()).mean();
    expected.backward();
    data_parallel ? data_parallel->backward(loss) : loss.backward();
    if (step == 0) {
      const auto own_logits = whole_logits.detach().narrow(0, dp_rank * share, share);
      const auto own_expected =
          torch::nn::functional::cross_entropy(own_logits.reshape({-1, config.vocabulary}), own_targets.reshape(-1));
      check_close(loss, own_expected, kRounding, "loss");
      check_close(split_logits, slice_of(own_logits, -1, 1, tp_rank, tp_size), kRounding, "logits");
      for (const auto& parameter : split_parameters)
        check_close(
            parameter.value().grad(),
            expected_shard(parameter.key(), whole_parameters[parameter.key()].grad(), tp_rank, tp_size, sequence),
            kRounding, parameter.key() + "'s gradient");
    }
    whole_optimizer.step();
    split_optimizer.step();
    losses.push_back(acc::item<double>(loss));
  }
  CHECK(losses.back() < losses.front());  // it learned: the comparison is not of untouched weights
  for (const auto& parameter : split_parameters)
    check_close(parameter.value(),
                expected_shard(parameter.key(), whole_parameters[parameter.key()], tp_rank, tp_size, sequence),
                kParameterDrift, parameter.key() + " after " + std::to_string(kSteps) + " steps");
  if (sequence) {
    // A sequence the group cannot split is an error on every rank, before any collective.
    const auto odd = at::zeros({1, tp_size + 1}, at::TensorOptions(device).dtype(at::kLong));
    CHECK(error_of([&] { split->forward(odd); }) ==
          "sequence parallelism splits the sequence (dimension 1, of length " + std::to_string(tp_size + 1) +
              ") over " + std::to_string(tp_size) +
              " ranks, which does not divide it; make the sequence length a multiple of the tensor-parallel size");
    return;
  }
  check_whole_weights(whole, split, mesh, build);
  check_sharded_state(split, split_optimizer, mesh, build, adamw);
}

#if ACC_HAS_GLOO
// Sequences counting up from random starts (which a model can learn), one per index.
struct Sequences {
  GptConfig config;
  int64_t count;
  std::size_t size() const { return static_cast<std::size_t>(count); }
  at::Tensor get(std::size_t i) const {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(5000 + i);
    const auto start = at::randint(config.vocabulary, {1}, generator, at::kLong);
    return (start + at::arange(config.context + 1, at::kLong)).remainder(config.vocabulary);
  }
};

using TpFsdp = acc::Accelerator<acc::FSDP<acc::Gloo>>;
using TpDdp = acc::Accelerator<acc::DDP<acc::Gloo>>;

// AdamW's state of what FSDP gave the optimizer (this rank's flat shards): step, exp_avg, exp_avg_sq.
std::vector<at::Tensor> flat_adamw_state(const torch::optim::AdamW& optimizer) {
  using StateMap = std::decay_t<decltype(optimizer.state())>;
  std::vector<at::Tensor> state;
  for (const auto& shard : optimizer.param_groups().front().params()) {
    const auto& own = static_cast<const torch::optim::AdamWParamState&>(
        *optimizer.state().at(acc::compat::optimizer_state_key<StateMap>(shard)));
    state.push_back(at::full({}, static_cast<double>(own.step()), at::kDouble));
    state.push_back(own.exp_avg().clone());
    state.push_back(own.exp_avg_sq().clone());
  }
  return state;
}

// The options that tell a strategy the mesh's tp size.
template <class Accelerator>
acc::AcceleratorOptions tp_options(int tp_size) {
  if constexpr (std::is_same_v<Accelerator, TpFsdp>)
    return acc::AcceleratorOptions().fsdp(acc::FSDPOptions().tp_size(tp_size));
  else
    return acc::AcceleratorOptions().ddp(acc::DDPOptions().tp_size(tp_size));
}

// What the optimizer holds of this rank's model: FSDP's flat shards, or each slice and whole tensor.
template <class Accelerator>
std::vector<at::Tensor> optimizer_state(const torch::optim::AdamW& optimizer, const Gpt& split) {
  if constexpr (std::is_same_v<Accelerator, TpFsdp>) return flat_adamw_state(optimizer);
  std::vector<at::Tensor> state;
  for (const auto& t : adamw_state(optimizer, *split)) state.push_back(t.clone());
  return state;
}

// The GPT split over the mesh's tp groups, prepared with its optimizer by `accelerator` (FSDP or
// DDP told the tp size), trained an epoch of the Accelerator's loader with clipping, and `whole`
// alongside in this process on every dp rank's batches (gathered): the same clipped norm each
// step. Returns the split model's losses.
template <class Accelerator, class Prepared, class Optimizer, class Loader>
std::vector<double> train_split(Accelerator& accelerator, acc::DeviceMesh<acc::Gloo>& mesh, Prepared& model,
                                Optimizer& optimizer, Loader& loader, const std::vector<at::Tensor>& parameters,
                                Gpt& whole, torch::optim::AdamW& whole_optimizer) {
  const GptConfig config;
  std::vector<double> losses;
  for (auto& batch : loader) {
    // The tp group's ranks read the same batch, the dp ranks different ones.
    const auto tp_batches = mesh.tp().all_gather(batch.contiguous());
    for (const auto& other : tp_batches) CHECK(at::equal(other, batch));
    const auto dp_batches = mesh.dp().all_gather(batch.contiguous());
    CHECK(!at::equal(dp_batches.front(), dp_batches.back()));
    const auto all = at::cat(dp_batches, 0);
    optimizer.zero_grad();
    const auto logits = model(batch.narrow(1, 0, config.context));
    const auto loss =
        acc::tp::vocab_parallel_cross_entropy(logits, batch.narrow(1, 1, config.context), mesh.tp()).mean();
    accelerator.backward(loss);
    losses.push_back(acc::item<double>(loss));
    // max_norm well below the norm: every step clips.
    const double norm = accelerator.clip_grad_norm_(parameters, 0.05);
    optimizer.step();

    whole_optimizer.zero_grad();
    const auto expected = torch::nn::functional::cross_entropy(
        whole->forward(all.narrow(1, 0, config.context)).reshape({-1, config.vocabulary}),
        all.narrow(1, 1, config.context).reshape(-1));
    expected.backward();
    const auto whole_parameters = whole->parameters();
    const double whole_norm = torch::nn::utils::clip_grad_norm_(whole_parameters, 0.05);
    // Gradients that differ by kRounding each differ in norm by at most sqrt(count) times that; a
    // slice counted twice or a whole tensor counted per tp rank differs by percents.
    int64_t count = 0;
    for (const auto& parameter : whole_parameters) count += parameter.numel();
    CHECK(std::abs(norm - whole_norm) <= kRounding * std::sqrt(double(count)) * std::max(1.0, whole_norm));
    whole_optimizer.step();
  }
  return losses;
}

// Through Accelerator<Strategy> told tp 2 on every dp rank: training equals one process's, the
// whole weights are saved, a resumed state is bit for bit the saved one, and gather_for_metrics
// counts a tp group's values once.
template <class Accelerator>
void check_split_through_accelerator(bool sequence = false) {
  const auto env = acc::ProcessEnvironment::from_environment();
  REQUIRE(env.world_size % 2 == 0);
  const GptConfig config;
  const auto adamw = gpt_adamw();
  const int dp_size = env.world_size / 2;
  constexpr int64_t share = 4;  // sequences per dp rank and step
  const Sequences data{config, kSteps * share * dp_size};
  const auto dir = fs::temp_directory_path() / ("acc_tp_accelerator_" + std::to_string(::getppid()));

  std::map<std::string, at::Tensor> trained;
  std::vector<at::Tensor> trained_optimizer;
  {
    Accelerator accelerator(tp_options<Accelerator>(2));
    acc::DeviceMesh<acc::Gloo> mesh(env, {1, dp_size, 2});
    Gpt whole = float64_gpt(0);
    torch::optim::AdamW whole_optimizer(whole->parameters(), adamw);
    Gpt split = float64_gpt(0);
    acc::tp::parallelize(*split, mesh, sequence ? gpt_sequence_plan(config) : gpt_plan(config));
    const auto parameters = split->parameters();
    torch::optim::AdamW split_optimizer(parameters, adamw);
    auto [model, optimizer, loader] =
        accelerator.prepare(split, split_optimizer, acc::DataLoader(data, acc::DataLoaderOptions(share)));
    CHECK(static_cast<int>(loader.size()) == kSteps);  // the dp ranks share the batches; a tp group reads one
    const auto losses = train_split(accelerator, mesh, model, optimizer, loader, parameters, whole, whole_optimizer);
    REQUIRE(losses.size() == kSteps);
    CHECK(losses.back() < losses.front());  // it learned: the comparison is not of untouched weights
    // The whole weights (the tp slices joined) are the whole model's, within AdamW's drift.
    const auto state = accelerator.strategy().full_state(*split);
    const auto whole_parameters = whole->named_parameters();
    for (const auto& [name, value] : state) {
      if (!whole_parameters.contains(name)) continue;
      check_close(value, whole_parameters[name].detach(), kParameterDrift, name + " after training");
    }
    // save_model writes them whole; save_state what resumes.
    accelerator.save_model(model, dir / "model");
    accelerator.save_state(dir / "state");
    for (const auto& [name, value] : state) trained[name] = value;
    trained_optimizer = optimizer_state<Accelerator>(split_optimizer, split);
    if (env.rank == 0) {
      const auto saved = acc::safetensors::load_file(dir / "model" / "model.safetensors").tensors;
      REQUIRE(saved.size() == state.size());
      for (const auto& [name, value] : state) CHECK(at::equal(saved.at(name), value));
    }
    accelerator.wait_for_everyone();
  }
  {
    // A fresh split model and optimizer resume bit for bit.
    Accelerator accelerator(tp_options<Accelerator>(2));
    acc::DeviceMesh<acc::Gloo> mesh(env, {1, dp_size, 2});
    Gpt split = float64_gpt(7);  // other weights, which load_state replaces
    acc::tp::parallelize(*split, mesh, sequence ? gpt_sequence_plan(config) : gpt_plan(config));
    torch::optim::AdamW split_optimizer(split->parameters(), adamw);
    // The same loader too: load_state restores its position.
    auto [model, optimizer, loader] =
        accelerator.prepare(split, split_optimizer, acc::DataLoader(data, acc::DataLoaderOptions(share)));
    accelerator.load_state(dir / "state");
    for (const auto& [name, value] : accelerator.strategy().full_state(*split))
      CHECK_MESSAGE(at::equal(value, trained.at(name)), name);
    const auto resumed = optimizer_state<Accelerator>(split_optimizer, split);
    REQUIRE(resumed.size() == trained_optimizer.size());
    for (std::size_t i = 0; i < resumed.size(); ++i) CHECK(at::equal(resumed[i], trained_optimizer[i]));

    // An evaluation epoch of 3 sequences past a whole number of batches: the last batch repeats
    // samples (even_batches), and each tp group reads every batch on each of its ranks; the
    // gathered epoch is the dataset once, in order.
    const Sequences evaluation{config, 2 * share * dp_size + 3};
    auto eval_loader = accelerator.prepare(acc::DataLoader(evaluation, acc::DataLoaderOptions(share)));
    std::vector<at::Tensor> gathered;
    for (auto& batch : eval_loader) gathered.push_back(accelerator.gather_for_metrics(batch));
    std::vector<at::Tensor> expected;
    for (std::size_t i = 0; i < evaluation.size(); ++i) expected.push_back(evaluation.get(i));
    CHECK(at::equal(at::cat(gathered, 0), at::stack(expected)));
    accelerator.wait_for_everyone();
    if (env.rank == 0) fs::remove_all(dir);
  }
}

// A strategy told a tp size takes a model split over exactly that: errors naming the setting.
template <class Accelerator>
void check_tp_size_errors(const std::string& strategy, const std::string& options, const std::string& action) {
  const auto env = acc::ProcessEnvironment::from_environment();
  const GptConfig config;
  acc::DeviceMesh<acc::Gloo> mesh(env, {1, env.world_size / 2, 2});
  const std::string setting = "(parallelism_config_tp_size, " + options + "::tp_size)";
  {
    Accelerator accelerator(tp_options<Accelerator>(2));
    Gpt whole(config);
    CHECK(error_of([&] { accelerator.prepare(whole); }) ==
          strategy + " was told tensor-parallel groups of 2 ranks " + setting +
              ", but the model given to prepare has no layer split by acc::tp::parallelize; split it over an "
              "acc::DeviceMesh's tp group before prepare (docs/tensor_parallelism.md), or set the tensor-parallel "
              "size to 1");
    accelerator.wait_for_everyone();
  }
  {
    Accelerator accelerator(tp_options<Accelerator>(1));
    Gpt split(config);
    acc::tp::parallelize(*split, mesh, gpt_plan(config));
    CHECK(error_of([&] { accelerator.prepare(split); }) ==
          strategy +
              " cannot prepare a model split by acc::tp::parallelize (its layer 'tok' is split): it would give "
              "every rank rank 0's shards and average gradients across the tensor-parallel group; give " +
              strategy + " the mesh's tp size " + setting + ", and it " + action +
              " the ranks that hold the same slices (docs/tensor_parallelism.md)");
    accelerator.wait_for_everyone();
  }
  CHECK(error_of([&] { Accelerator accelerator(tp_options<Accelerator>(3)); }) ==
        "tensor parallelism splits layers over groups of 3 ranks, which does not divide the " +
            std::to_string(env.world_size) + " processes (parallelism_config_tp_size, " + options +
            "::tp_size); give a tensor-parallel size that divides the number of processes");
  // No rank leaves while another still uses its mesh's communicators.
  mesh.dp().barrier();
  mesh.tp().barrier();
}

// Checkpoints of a split model on another number of processes (tp 2 both times), run phase by
// phase by dist/tp_resume_other_process_counts, sharing ACC_TEST_TP_RESUME_DIR=D:
//   acc launch (W ranks) acc_dist_worker -tc=tp_resume_save*   the first kSteps / 2 global batches
//       through DDP, then D/ddp_W and the first replica's optimizer state, D/optimizer_W_tp<t>.safetensors;
//       and D/fsdp_W, FSDP's, after one batch
//   ACC_TEST_TP_RESUME_FROM=W acc launch (N ranks) ... -tc=tp_resume_load*   D/ddp_W and the other half
// Global batches of 8 sequences (split_batches), the same however many dp ranks share them: the two
// halves train as one process does straight through.
constexpr int64_t kGlobalBatch = 8;

fs::path tp_resume_dir() {
  const char* dir = std::getenv("ACC_TEST_TP_RESUME_DIR");
  REQUIRE_MESSAGE(dir, "set ACC_TEST_TP_RESUME_DIR");
  return dir;
}
fs::path tp_checkpoint(const std::string& strategy, int world) {
  return tp_resume_dir() / (strategy + "_" + std::to_string(world));
}
fs::path tp_optimizer_state(int world, int tp_rank) {
  return tp_resume_dir() / ("optimizer_" + std::to_string(world) + "_tp" + std::to_string(tp_rank) + ".safetensors");
}

// The GPT from `seed`, split over tp groups of 2, with its AdamW and an epoch of kSteps global
// batches, prepared by `Accelerator` told tp 2: fn(accelerator, mesh, model, optimizer, loader, split, adamw).
template <class Accelerator, class Fn>
void with_split_gpt(uint64_t seed, Fn&& fn) {
  const auto env = acc::ProcessEnvironment::from_environment();
  REQUIRE(env.world_size % 2 == 0);
  const GptConfig config;
  Accelerator accelerator(tp_options<Accelerator>(2).split_batches(true));
  acc::DeviceMesh<acc::Gloo> mesh(env, {1, env.world_size / 2, 2});
  Gpt split = float64_gpt(seed);
  acc::tp::parallelize(*split, mesh, gpt_plan(config));
  torch::optim::AdamW adamw(split->parameters(), gpt_adamw());
  auto [model, optimizer, loader] = accelerator.prepare(
      split, adamw, acc::DataLoader(Sequences{config, kSteps * kGlobalBatch}, acc::DataLoaderOptions(kGlobalBatch)));
  fn(accelerator, mesh, model, optimizer, loader, split, adamw);
  accelerator.wait_for_everyone();
  mesh.dp().barrier();
  mesh.tp().barrier();
}

// `steps` global batches from where the loader is.
template <class Accelerator, class Model, class Optimizer, class Loader>
void train_global_batches(Accelerator& accelerator, acc::DeviceMesh<acc::Gloo>& mesh, Model& model,
                          Optimizer& optimizer, Loader& loader, int steps) {
  const GptConfig config;
  int done = 0;
  for (auto& batch : loader) {
    REQUIRE(batch.size(0) == kGlobalBatch / mesh.size(acc::MeshDim::dp_shard));
    optimizer.zero_grad();
    const auto logits = model(batch.narrow(1, 0, config.context));
    accelerator.backward(
        acc::tp::vocab_parallel_cross_entropy(logits, batch.narrow(1, 1, config.context), mesh.tp()).mean());
    optimizer.step();
    if (++done == steps) break;
  }
  REQUIRE(done == steps);
}

// The whole GPT from seed 0 trained in this process, straight through the kSteps global batches.
std::map<std::string, at::Tensor> trained_straight_through() {
  const GptConfig config;
  Gpt whole = float64_gpt(0);
  torch::optim::AdamW adamw(whole->parameters(), gpt_adamw());
  const Sequences data{config, kSteps * kGlobalBatch};
  for (int64_t step = 0; step < kSteps; ++step) {
    std::vector<at::Tensor> sequences;
    for (int64_t i = 0; i < kGlobalBatch; ++i)
      sequences.push_back(data.get(static_cast<std::size_t>(step * kGlobalBatch + i)));
    const auto batch = at::stack(sequences);
    adamw.zero_grad();
    torch::nn::functional::cross_entropy(
        whole->forward(batch.narrow(1, 0, config.context)).reshape({-1, config.vocabulary}),
        batch.narrow(1, 1, config.context).reshape(-1))
        .backward();
    adamw.step();
  }
  std::map<std::string, at::Tensor> parameters;
  for (const auto& p : whole->named_parameters()) parameters[p.key()] = p.value().detach();
  return parameters;
}

// The tensors named by their index, as a safetensors file holds them.
std::vector<std::pair<std::string, at::Tensor>> numbered(const std::vector<at::Tensor>& tensors) {
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (std::size_t i = 0; i < tensors.size(); ++i) named.emplace_back(std::to_string(i), tensors[i]);
  return named;
}
#endif

}  // namespace

#if ACC_HAS_GLOO
TEST_SUITE("tp_accelerator" * doctest::skip()) {
  TEST_CASE(
      "a GPT split over tp groups of 2 and sharded by FSDP over the rest trains through the Accelerator as on one "
      "process") {
    check_split_through_accelerator<TpFsdp>();
  }
  TEST_CASE(
      "a GPT split over tp groups of 2 with DDP averaging over the rest trains through the Accelerator as on one "
      "process") {
    check_split_through_accelerator<TpDdp>();
  }

  TEST_CASE(
      "a GPT split over tp groups of 2 with sequence parallelism and DDP averaging over the rest trains through the "
      "Accelerator as on one process") {
    check_split_through_accelerator<TpDdp>(/*sequence=*/true);
  }

  TEST_CASE("FSDP's tensor-parallel size must be the split's: errors naming the setting and the fix") {
    check_tp_size_errors<TpFsdp>("FSDP", "FSDPOptions", "shards over");
  }
  TEST_CASE("FSDP refuses a sequence-parallel split: its flat shards would bypass the layer norms' gradient sums") {
    const auto env = acc::ProcessEnvironment::from_environment();
    const GptConfig config;
    acc::DeviceMesh<acc::Gloo> mesh(env, {1, env.world_size / 2, 2});
    TpFsdp accelerator(tp_options<TpFsdp>(2));
    Gpt split(config);
    acc::tp::parallelize(*split, mesh, gpt_sequence_plan(config));
    CHECK(error_of([&] { accelerator.prepare(split); }) ==
          "FSDP: 'blocks.0.fc.bias' is sequence-parallel, and the LayerNorms beside it sum their gradients over the "
          "tp group by hooks on the parameter tensors, which FSDP replaces by its flat shards; leave "
          "sequence_parallel() out of the plan, or use DDP told the tp size (DDPOptions::tp_size)");
    accelerator.wait_for_everyone();
    mesh.dp().barrier();
    mesh.tp().barrier();
  }
  TEST_CASE("DDP's tensor-parallel size must be the split's: errors naming the setting and the fix") {
    check_tp_size_errors<TpDdp>("DDP", "DDPOptions", "averages gradients over");
  }
}

TEST_SUITE("tp_resume" * doctest::skip()) {
  TEST_CASE("tp_resume_save: half the global batches through DDP beside tp 2 and a checkpoint; FSDP's after one") {
    const int world = acc::ProcessEnvironment::from_environment().world_size;
    with_split_gpt<TpDdp>(0, [&](auto& accelerator, auto& mesh, auto& model, auto& optimizer, auto& loader, Gpt& split,
                                 torch::optim::AdamW& adamw) {
      train_global_batches(accelerator, mesh, model, optimizer, loader, kSteps / 2);
      accelerator.save_state(tp_checkpoint("ddp", world));
      // The first replica's, which every replica holds alike.
      if (mesh.coordinate(acc::MeshDim::dp_shard) == 0)
        acc::safetensors::save_file(numbered(optimizer_state<TpDdp>(adamw, split)),
                                    tp_optimizer_state(world, mesh.coordinate(acc::MeshDim::tp)));
    });
    with_split_gpt<TpFsdp>(
        0, [&](auto& accelerator, auto& mesh, auto& model, auto& optimizer, auto& loader, Gpt&, torch::optim::AdamW&) {
          train_global_batches(accelerator, mesh, model, optimizer, loader, 1);
          accelerator.save_state(tp_checkpoint("fsdp", world));
        });
  }

  TEST_CASE(
      "tp_resume_load: DDP beside tp 2 resumes on another number of processes and trains as one process "
      "straight through; FSDP's shards of the slices stay bound to theirs") {
    const char* from = std::getenv("ACC_TEST_TP_RESUME_FROM");
    REQUIRE_MESSAGE(from, "set ACC_TEST_TP_RESUME_FROM");
    const int saved = std::stoi(from), world = acc::ProcessEnvironment::from_environment().world_size;
    REQUIRE(saved != world);
    with_split_gpt<TpDdp>(7, [&](auto& accelerator, auto& mesh, auto& model, auto& optimizer, auto& loader, Gpt& split,
                                 torch::optim::AdamW& adamw) {
      accelerator.load_state(tp_checkpoint("ddp", saved));
      // Each rank's optimizer state is the saved one of its tp position, bit for bit.
      const auto expected =
          acc::safetensors::load_file(tp_optimizer_state(saved, mesh.coordinate(acc::MeshDim::tp))).tensors;
      const auto resumed = optimizer_state<TpDdp>(adamw, split);
      REQUIRE(resumed.size() == expected.size());
      for (std::size_t i = 0; i < resumed.size(); ++i)
        CHECK_MESSAGE(at::equal(resumed[i], expected.at(std::to_string(i))), i);
      // The other half of the global batches, from where the checkpoint's loader was: the split
      // model then is the whole one trained straight through, within AdamW's drift bound (a
      // wrong batch or optimizer state differs by orders of magnitude more).
      train_global_batches(accelerator, mesh, model, optimizer, loader, kSteps - kSteps / 2);
      const auto straight = trained_straight_through();
      for (const auto& [name, value] : accelerator.strategy().full_state(*split))
        if (straight.count(name)) check_close(value, straight.at(name), kParameterDrift, name + " resumed");
    });
    with_split_gpt<TpFsdp>(7, [&](auto& accelerator, auto&, auto&, auto&, auto&, Gpt&, torch::optim::AdamW&) {
      CHECK(error_of([&] { accelerator.load_state(tp_checkpoint("fsdp", saved)); })
                .find("saved by " + std::to_string(saved) + " processes, and this job has " + std::to_string(world) +
                      "; with FSDP beside tensor parallelism each rank's files hold its shards of its own slices") !=
            std::string::npos);
    });
  }
}
#endif

TEST_SUITE("tp_dp" * doctest::skip()) {
  TEST_CASE("a GPT split over tp groups of 2, data-parallel across them, trains as on one process") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      REQUIRE(env.world_size % 2 == 0);
      acc::DeviceMesh<Comm> mesh(env, {env.world_size / 2, 1, 2});
      check_gpt_against_one_process(mesh, device);
    });
  }
  TEST_CASE(
      "a GPT with sequence parallelism, split over tp groups of 2, data-parallel across them, trains as on "
      "one process") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      REQUIRE(env.world_size % 2 == 0);
      acc::DeviceMesh<Comm> mesh(env, {env.world_size / 2, 1, 2});
      check_gpt_against_one_process(mesh, device, /*sequence=*/true);
    });
  }
}

TEST_SUITE("device_mesh" * doctest::skip()) {
  TEST_CASE("the mesh arranges the ranks row-major, tp innermost, with a communicator per dimension") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      const int world = env.world_size;
      // Every way of writing the world as dp_replicate x dp_shard x tp.
      for (int replicate = 1; replicate <= world; ++replicate)
        for (int shard = 1; shard <= world / replicate; ++shard) {
          if (world % (replicate * shard) != 0) continue;
          const acc::MeshShape shape{replicate, shard, world / (replicate * shard)};
          CAPTURE(shape.describe());
          acc::DeviceMesh<Comm> mesh(env, shape);
          const int t = env.rank % shape.tp, s = env.rank / shape.tp % shape.dp_shard,
                    r = env.rank / (shape.tp * shape.dp_shard);
          CHECK(mesh.coordinate(acc::MeshDim::dp_replicate) == r);
          CHECK(mesh.coordinate(acc::MeshDim::dp_shard) == s);
          CHECK(mesh.coordinate(acc::MeshDim::tp) == t);
          const auto rank_at = [&](int rr, int ss, int tt) { return (rr * shape.dp_shard + ss) * shape.tp + tt; };
          // The sum of the global ranks over each group, by its communicator, against the formula.
          const auto summed = [&](Comm& comm) {
            auto value = at::full({1}, double(env.rank), at::TensorOptions(device).dtype(at::kDouble));
            comm.all_reduce(value, acc::ReduceOp::sum);
            return int_values(value)[0];
          };
          int64_t replicas = 0, shards = 0, tps = 0, dps = 0;
          for (int i = 0; i < shape.dp_replicate; ++i) replicas += rank_at(i, s, t);
          for (int i = 0; i < shape.dp_shard; ++i) shards += rank_at(r, i, t);
          for (int i = 0; i < shape.tp; ++i) tps += rank_at(r, s, i);
          for (int i = 0; i < shape.dp_replicate; ++i)
            for (int j = 0; j < shape.dp_shard; ++j) dps += rank_at(i, j, t);
          CHECK(summed(mesh.dp_replicate()) == replicas);
          CHECK(summed(mesh.dp_shard()) == shards);
          CHECK(summed(mesh.tp()) == tps);
          CHECK(summed(mesh.dp()) == dps);
          CHECK(mesh.tp().world_size() == shape.tp);
          CHECK(mesh.dp().world_size() == shape.dp_replicate * shape.dp_shard);
          CHECK(mesh.group(acc::MeshDim::tp).ranks().front() == rank_at(r, s, 0));
        }
    });
  }

  TEST_CASE("mesh sizes that do not make the world are errors naming the sizes and the config keys") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      const std::string world = std::to_string(env.world_size);
      const std::string keys =
          "(parallelism_config_dp_replicate_size, parallelism_config_dp_shard_size, parallelism_config_tp_size)";
      CHECK(error_of([&] {
              acc::DeviceMesh<Comm> mesh(env, {2, env.world_size, 2});
            }) == "the device mesh dp_replicate 2 x dp_shard " + world + " x tp 2 has " +
                      std::to_string(4 * env.world_size) + " ranks, but the job has " + world + " processes " + keys +
                      "; make the product of the sizes the number of processes");
      CHECK(error_of([&] {
              acc::DeviceMesh<Comm> mesh(env, {1, 0, env.world_size});
            }) == "the device mesh's dp_shard size is 0 (dp_replicate 1 x dp_shard 0 x tp " + world + ") " + keys +
                      "; every size must be at least 1");
      acc::Config config;
      config.tp_size = env.world_size + 1;
      CHECK(error_of([&] { acc::MeshShape::from_config(config, env.world_size); }) ==
            "the device mesh's dp_replicate 1 x tp " + std::to_string(env.world_size + 1) + " does not divide the " +
                world + " processes " + keys + "; make their product divide the number of processes");
      config.tp_size = env.world_size;
      const auto shape = acc::MeshShape::from_config(config, env.world_size);
      CHECK(shape.dp_replicate == 1);
      CHECK(shape.dp_shard == 1);
      CHECK(shape.tp == env.world_size);
    });
  }
}

TEST_SUITE("tp" * doctest::skip()) {
  TEST_CASE("the vocabulary-parallel cross-entropy is cross_entropy on the full logits, in value and gradient") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      acc::DeviceMesh<Comm> mesh(env, {1, 1, env.world_size});
      const int64_t vocabulary = 16 * env.world_size;
      at::manual_seed(7);  // the same logits and targets on every rank
      const auto full = (at::randn({3, 5, vocabulary}, at::kDouble) * 4).to(device).requires_grad_();
      const auto target = at::randint(vocabulary, {3, 5}, at::kLong).to(device);
      const auto weights = at::rand({3, 5}, at::kDouble).to(device);  // a gradient that is not uniform
      const auto expected =
          torch::nn::functional::cross_entropy(full.reshape({-1, vocabulary}), target.reshape(-1),
                                               torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
              .reshape({3, 5});
      (expected * weights).sum().backward();

      const auto local = slice_of(full.detach(), -1, 1, env.rank, env.world_size).requires_grad_();
      const auto losses = acc::tp::vocab_parallel_cross_entropy(local, target, mesh.tp());
      (losses * weights).sum().backward();
      // Sums of up to `vocabulary` exponentials, in another order: float64 rounding.
      check_close(losses, expected.detach(), kRounding, "losses");
      check_close(local.grad(), slice_of(full.grad(), -1, 1, env.rank, env.world_size), kRounding, "logits' gradient");
    });
  }

  TEST_CASE("acc::nn::Embedding is torch::nn::Embedding's drop-in: weights from one seed, lookups, padding row") {
    const auto options = torch::nn::EmbeddingOptions(10, 4).padding_idx(-2);
    at::manual_seed(5);
    torch::nn::Embedding theirs(options);
    at::manual_seed(5);
    acc::nn::Embedding ours(options);
    CHECK(at::equal(ours->weight, theirs->weight));
    CHECK(ours->options.padding_idx() == c10::optional<int64_t>(8));
    CHECK(ours->named_parameters().keys() == std::vector<std::string>{"weight"});
    const auto ids = at::tensor({1, 8, 3, 8, 0, 9}, at::kLong).reshape({2, 3});
    const auto looked_up = ours(ids);
    CHECK(at::equal(looked_up, theirs(ids)));
    looked_up.square().sum().backward();
    theirs(ids).square().sum().backward();
    CHECK(at::equal(ours->weight.grad(), theirs->weight.grad()));
    CHECK(at::equal(ours->weight.grad()[8], at::zeros({4})));  // the padding row learns nothing
  }

  TEST_CASE("a vocabulary-parallel embedding with a padding row is the whole one: lookups and gradients") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      acc::DeviceMesh<Comm> mesh(env, {1, 1, env.world_size});
      const int64_t rows = 4, vocabulary = rows * env.world_size, padding = vocabulary - 1;  // on the last rank
      const auto build = [&] {
        at::manual_seed(6);
        auto table =
            torch::nn::Sequential(acc::nn::Embedding(torch::nn::EmbeddingOptions(vocabulary, 3).padding_idx(padding)));
        table->to(device, at::kDouble);
        return table;
      };
      auto whole = build();
      auto split = build();
      acc::tp::parallelize(*split, mesh, {{"0", acc::tp::rowwise}});
      const auto& layer = *split[0]->template as<acc::nn::EmbeddingImpl>();
      const bool holds_padding = env.rank == env.world_size - 1;
      CHECK(layer.options.num_embeddings() == rows);
      CHECK(layer.options.padding_idx() == (holds_padding ? c10::optional<int64_t>(rows - 1) : c10::nullopt));
      const auto ids = at::arange(vocabulary, at::kLong).repeat({2}).reshape({4, -1}).to(device);
      const auto expected = whole->forward(ids);
      const auto looked_up = split->forward(ids);
      // Each row is summed with zeros from the other ranks: exact.
      CHECK(at::equal(looked_up, expected));
      expected.square().sum().backward();
      looked_up.square().sum().backward();
      const auto& full_grad = whole[0]->template as<acc::nn::EmbeddingImpl>()->weight.grad();
      CHECK(at::equal(layer.weight.grad(), full_grad.narrow(0, env.rank * rows, rows)));
      CHECK(at::equal(full_grad[padding], at::zeros({3}, full_grad.options())));
    });
  }

  TEST_CASE("a gathered column-parallel layer feeding a row-parallel one that splits its input is the unsplit pair") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      acc::DeviceMesh<Comm> mesh(env, {1, 1, env.world_size});
      const int64_t width = 4 * env.world_size;
      const auto build = [&] {
        at::manual_seed(3);
        auto pair = torch::nn::Sequential(acc::nn::Linear(6, width), acc::nn::Linear(width, 5));
        pair->to(device, at::kDouble);
        return pair;
      };
      auto whole = build();
      auto split = build();
      CHECK(acc::tp::parallelize(*split, mesh,
                                 {{"0", acc::tp::colwise.gather_output()}, {"1", acc::tp::rowwise.split_input()}}) ==
            std::vector<std::string>{"0", "1"});
      at::manual_seed(4);
      const auto input = at::randn({7, 6}, at::kDouble).to(device);
      const auto expected = whole->forward(input);
      const auto output = split->forward(input);
      check_close(output, expected, kRounding, "output");
      expected.square().sum().backward();
      output.square().sum().backward();
      const auto whole_parameters = whole->named_parameters();
      for (const auto& parameter : split->named_parameters()) {
        const auto& full = whole_parameters[parameter.key()];
        const auto expected_grad = parameter.key() == "0.weight" || parameter.key() == "0.bias"
                                       ? slice_of(full.grad(), 0, 1, env.rank, env.world_size)
                                   : parameter.key() == "1.weight"
                                       ? slice_of(full.grad(), 1, 1, env.rank, env.world_size)
                                       : full.grad();
        check_close(parameter.value().grad(), expected_grad, kRounding, parameter.key() + "'s gradient");
      }
    });
  }

  TEST_CASE("a GPT split over every rank trains as on one process: loss, logits, gradients, 20 AdamW steps") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      acc::DeviceMesh<Comm> mesh(env, {1, 1, env.world_size});
      check_gpt_against_one_process(mesh, device);
    });
  }
  TEST_CASE(
      "under sequence parallelism a layer norm left out of the plan gets a partial gradient on each rank, which "
      "acc::tp::sequence_parallel sums") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      acc::DeviceMesh<Comm> mesh(env, {1, 1, env.world_size});
      const GptConfig config;
      const auto build = [&] {
        at::manual_seed(0);
        Gpt gpt(config);
        gpt->to(device, at::kDouble);
        return gpt;
      };
      Gpt whole = build(), split = build();
      auto plan = gpt_sequence_plan(config);
      plan.erase(plan.begin() + 2);  // the blocks' layer norms; ln_f stays named
      REQUIRE(plan.size() == 8);
      acc::tp::parallelize(*split, mesh, plan);
      at::manual_seed(1);
      const auto tokens = at::randint(config.vocabulary, {2, config.context + 1}, at::kLong).to(device);
      const auto inputs = tokens.narrow(1, 0, config.context), targets = tokens.narrow(1, 1, config.context);
      torch::nn::functional::cross_entropy(whole->forward(inputs).reshape({-1, config.vocabulary}), targets.reshape(-1))
          .backward();
      acc::tp::vocab_parallel_cross_entropy(split->forward(inputs), targets, mesh.tp()).mean().backward();
      const auto grad = [](const Gpt& gpt, const std::string& name) {
        return gpt->named_parameters()[name].grad().clone();
      };
      check_close(grad(split, "ln_f.weight"), grad(whole, "ln_f.weight"), kRounding, "ln_f's summed gradient");
      // Each rank's is its slice of the sequence's share: far from the whole gradient (a missing
      // share is of the gradient's own size, not rounding), and summed over the group exactly it.
      auto partial = grad(split, "blocks.0.ln1.weight");
      const auto expected = grad(whole, "blocks.0.ln1.weight");
      CHECK(acc::item<double>((partial - expected).abs().max()) > 1e-3 * acc::item<double>(expected.abs().max()));
      mesh.tp().all_reduce(partial, acc::ReduceOp::sum);
      check_close(partial, expected, kRounding, "blocks.0.ln1's partial gradients summed");
    });
  }
  TEST_CASE(
      "a GPT with sequence parallelism split over every rank trains as on one process, each rank holding its "
      "slice of the sequence between the split layers") {
    with_world([](const acc::ProcessEnvironment& env, c10::Device device, auto* comm_type) {
      using Comm = std::remove_pointer_t<decltype(comm_type)>;
      acc::DeviceMesh<Comm> mesh(env, {1, 1, env.world_size});
      check_gpt_against_one_process(mesh, device, /*sequence=*/true);
    });
  }

  TEST_CASE("DDP refuses a model split by parallelize: it would mix the shards of a tp group") {
    with_accelerator([](auto& accelerator) {
      using Comm = std::decay_t<decltype(accelerator.strategy().comm())>;
      acc::DeviceMesh<Comm> mesh(acc::ProcessEnvironment::from_environment(),
                                 {1, 1, acc::ProcessEnvironment::from_environment().world_size});
      const GptConfig config;
      Gpt gpt(config);
      acc::tp::parallelize(*gpt, mesh, gpt_plan(config));
      CHECK(error_of([&] { accelerator.prepare(gpt); }) ==
            "DDP cannot prepare a model split by acc::tp::parallelize (its layer 'tok' is split): it would give every "
            "rank rank 0's shards and average gradients across the tensor-parallel group; give DDP the mesh's tp "
            "size (parallelism_config_tp_size, DDPOptions::tp_size), and it averages gradients over the ranks that "
            "hold the same slices (docs/tensor_parallelism.md)");
      // No rank leaves while another still connects its mesh's communicators to it.
      accelerator.wait_for_everyone();
    });
  }

  TEST_CASE("a plan that does not fit the model is an error naming the layer and the fix") {
    // The checks parallelize makes before installing anything, for 2, 3 or 5 ranks.
    const GptConfig config;
    Gpt gpt(config);
    const auto message = [&](const acc::tp::Plan& plan, int ranks) {
      return error_of([&] {
        for (auto& planned : acc::tp::detail::planned_layers(*gpt, plan)) {
          if (auto* linear = dynamic_cast<acc::nn::LinearImpl*>(planned.module.get()))
            acc::tp::detail::shard(planned.name, *linear, planned.style, 0, ranks);
          else
            acc::tp::detail::shard(planned.name, dynamic_cast<acc::nn::EmbeddingImpl&>(*planned.module), planned.style,
                                   0, ranks);
        }
      });
    };
    CHECK(contains(message({{"blocks.*.attn", acc::tp::colwise}}, 2),
                   "acc::tp::parallelize: the plan's pattern 'blocks.*.attn' matches no module of the model (its "
                   "modules: tok, pos, blocks, blocks.0, blocks.0.ln1, blocks.0.qkv,"));
    CHECK(message({{"ln_f", acc::tp::rowwise}}, 2) ==
          "acc::tp::parallelize: the plan's pattern 'ln_f' matches 'ln_f', a torch::nn::LayerNormImpl, which tensor "
          "parallelism cannot split; only acc::nn::Linear and acc::nn::Embedding are split: write them in the model "
          "where it has torch::nn::Linear or torch::nn::Embedding, or narrow the pattern");
    CHECK(message({{"ln_f", acc::tp::sequence_parallel.gather_output()}}, 2) ==
          "acc::tp::parallelize: 'ln_f' is sequence_parallel, whose parameters stay whole: give it plain "
          "acc::tp::sequence_parallel");
    CHECK(
        message({{"blocks.0.f*", acc::tp::colwise}, {"*.fc", acc::tp::colwise}}, 2) ==
        "acc::tp::parallelize: the module 'blocks.0.fc' matches the plan's patterns 'blocks.0.f*' and '*.fc'; make the "
        "patterns name each layer once");
    CHECK(message({{"blocks.0.qkv", acc::tp::colwise.fused(3).heads(config.heads)}}, 3) ==
          "acc::tp::parallelize: 'blocks.0.qkv' holds 4 attention heads per part (32 features), which do not split "
          "into whole heads over the 3 tensor-parallel ranks; make the head count a multiple of the tensor-parallel "
          "size (parallelism_config_tp_size)");
    CHECK(message({{"head", acc::tp::colwise}}, 5) ==
          "acc::tp::parallelize: 'head' has out_features 64, which does not split over the 5 tensor-parallel ranks; "
          "make it a multiple of the tensor-parallel size (parallelism_config_tp_size)");
    CHECK(message({{"tok", acc::tp::colwise}}, 2) ==
          "acc::tp::parallelize: 'tok' is an embedding, which is split by its vocabulary: use acc::tp::rowwise "
          "(colwise, splitting embedding_dim, is not supported)");
    CHECK(contains(message({{"blocks.1.qkv", acc::tp::colwise.fused(3).gather_output()}}, 2), "is fused"));
  }
}
