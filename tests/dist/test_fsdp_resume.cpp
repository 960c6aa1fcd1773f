#include "../error_of.hpp"
#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <acc/checkpoint/optimizer_shards.hpp>
#include <acc/checkpoint/safetensors.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

// FSDP checkpoints (FULL_STATE_DICT) resume with another number of processes: the model
// from its full state, each rank's optimizer state dealt out again from the saving ranks' files
// (checkpoint/optimizer_shards.hpp), the loader after the global batches done. Run phase by phase
// by tests/dist/CMakeLists.txt (dist/fsdp_resume_other_process_counts),
// sharing ACC_TEST_FSDP_RESUME_DIR=D:
//   acc_dist_worker -tc=fsdp_resume_dealing*                        the dealing itself, one process
//   acc launch (2 ranks) acc_dist_worker -tc=fsdp_resume_straight*  12 batches, D/straight.safetensors
//   acc launch (W ranks) acc_dist_worker -tc=fsdp_resume_save*      5 batches: D/<kind>_W for FULL_SHARD,
//                         SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD and SHARDED_STATE_DICT;
//                         D/optimizer_<kind>_W.safetensors
//   ACC_TEST_FSDP_RESUME_FROM=W acc launch (N ranks) ... -tc=fsdp_resume_load*   D/<kind>_W and 7 more batches
// Every run sees the same global batches of 6 samples (split_batches: 6, 3 or 2 per process).
namespace {

// The dealing alone, on one process and without a communicator (so also where Gloo is missing).

const torch::optim::AdamWParamState& adamw_state(const torch::optim::AdamW& adamw, const at::Tensor& p) {
  return static_cast<const torch::optim::AdamWParamState&>(
      *adamw.state().at(acc::compat::optimizer_state_key<std::decay_t<decltype(adamw.state())>>(p)));
}

// One saving rank of the dealing test: AdamW over its 3-element shard of a 5-element unit (rank 1's
// last element is padding, whose gradient FSDP keeps at zero) and over a parameter of no unit.
struct SavingRank {
  at::Tensor shard = at::zeros({3}, at::kDouble).requires_grad_();
  at::Tensor whole = at::zeros({4}, at::kDouble).requires_grad_();
  torch::optim::AdamW adamw{std::vector<at::Tensor>{shard, whole}, torch::optim::AdamWOptions(0.1)};
  std::string bytes;  // save_optimizer's archive

  SavingRank(int rank, int steps) {
    for (int step = 0; step < steps; ++step) {
      auto grad = at::arange(3 * rank, 3 * rank + 3, at::kDouble) + 1 + step;  // unit element e: e + 1 + step
      if (rank == 1) grad[2] = 0;
      shard.mutable_grad() = grad;
      whole.mutable_grad() = at::ones({4}, at::kDouble);
      adamw.step();
    }
    torch::serialize::OutputArchive archive;
    acc::detail::save_optimizer(adamw, archive);
    std::ostringstream out;
    archive.save_to(out);
    bytes = out.str();
  }
};

// A fresh AdamW over shard `index` of `here` (another split of the saved unit) and a parameter of no
// unit, given the saving ranks' state of the unit "u" (5 elements in 2 shards of 3).
struct Dealt {
  Dealt(const std::vector<const SavingRank*>& ranks, const acc::CheckpointMetadata::FlatUnit& here, int64_t index)
      : shard(at::zeros({here.shard_numel}, at::kDouble).requires_grad_()),
        whole(at::zeros({4}, at::kDouble).requires_grad_()),
        adamw(std::vector<at::Tensor>{shard, whole}, torch::optim::AdamWOptions(0.5)) {
    auto dealt = acc::detail::deal_optimizer_state({{"u", 5, 3, 2}}, {{here, index, shard}}, adamw, [&](int64_t rank) {
      read.push_back(rank);
      std::istringstream in(ranks.at(static_cast<std::size_t>(rank))->bytes);
      torch::serialize::InputArchive saved;
      saved.load_from(in);
      return saved;
    });
    acc::detail::load_optimizer(adamw, dealt.archive);
    copied = dealt.copied;
  }
  at::Tensor shard, whole;
  torch::optim::AdamW adamw;
  std::vector<int64_t> read;  // the saving ranks whose archives it read
  std::string copied;
};

}  // namespace

TEST_SUITE("fsdp_resume" * doctest::skip()) {
  TEST_CASE("fsdp_resume_dealing: 2 shards of 3 dealt to 3 shards of 2: slices, padding, options; steps must agree") {
    const SavingRank rank0(0, 3), rank1(1, 3);
    // The unit's state as the two ranks saved it, padding included.
    const auto saved = [&](auto entry) {
      return at::cat({entry(adamw_state(rank0.adamw, rank0.shard)), entry(adamw_state(rank1.adamw, rank1.shard))});
    };
    const auto exp_avg = saved([](const auto& state) { return state.exp_avg(); });
    const auto exp_avg_sq = saved([](const auto& state) { return state.exp_avg_sq(); });
    CHECK(exp_avg[5].item<double>() == 0);  // the padding's
    const std::vector<std::vector<int64_t>> reads{{0}, {0, 1}, {1}};
    std::vector<std::string> copied;
    for (int64_t index = 0; index < 3; ++index) {
      CAPTURE(index);
      const Dealt dealt({&rank0, &rank1}, {"u", 5, 2, 3}, index);
      CHECK(dealt.read == reads[static_cast<std::size_t>(index)]);
      const auto& mine = adamw_state(dealt.adamw, dealt.shard);
      CHECK(at::equal(mine.exp_avg(), exp_avg.narrow(0, 2 * index, 2)));
      CHECK(at::equal(mine.exp_avg_sq(), exp_avg_sq.narrow(0, 2 * index, 2)));
      CHECK(mine.step() == 3);
      // The parameter of no unit: its state whole, as every rank saved it.
      const auto& kept = adamw_state(dealt.adamw, dealt.whole);
      CHECK(at::equal(kept.exp_avg(), adamw_state(rank0.adamw, rank0.whole).exp_avg()));
      CHECK(kept.step() == 3);
      // The saved options (lr 0.1), not the ones this optimizer was made with.
      CHECK(dealt.adamw.param_groups()[0].options().get_lr() == 0.1);
      copied.push_back(dealt.copied);
    }
    // What each copied rather than dealt: the same whichever files it read.
    CHECK(copied[0].find("0.0.step=3\n") != std::string::npos);
    CHECK(copied[0].find("0.1.exp_avg=Double[4] crc32c ") != std::string::npos);
    CHECK(copied[1] == copied[0]);
    CHECK(copied[2] == copied[0]);
    // On one rank: the whole unit, from both files.
    const Dealt one({&rank0, &rank1}, {"u", 5, 5, 1}, 0);
    CHECK(one.read == std::vector<int64_t>{0, 1});
    CHECK(at::equal(adamw_state(one.adamw, one.shard).exp_avg(), exp_avg.narrow(0, 0, 5)));

    // A rank that stepped once more: its step count differs, which dealing cannot mend. A rank
    // reading both files says so; ranks reading one each copy different values, which the
    // checkpointer compares across ranks.
    const SavingRank ahead(1, 4);
    CHECK(error_of([&] {
            Dealt({&rank0, &ahead}, {"u", 5, 2, 3}, 1);
          }) ==
          "the optimizer state 'step' of parameter 0 of group 0 (FSDP unit 'u') differs between rank 0's file and "
          "rank 1's, and it must be the same on every rank (they step together)");
    CHECK(Dealt({&rank0, &ahead}, {"u", 5, 2, 3}, 2).copied != Dealt({&rank0, &ahead}, {"u", 5, 2, 3}, 0).copied);
    // Another model: its units do not match the saved ones.
    CHECK(error_of([&] {
            Dealt({&rank0, &rank1}, {"v", 6, 2, 3}, 0);
          }) ==
          "its FSDP unit 0 is 'u' of 5 parameter elements, and this model's is 'v' of 6; prepare the model with "
          "the same units");
  }
}

#if ACC_HAS_GLOO
namespace {

namespace fs = std::filesystem;

fs::path resume_dir() {
  const char* dir = std::getenv("ACC_TEST_FSDP_RESUME_DIR");
  REQUIRE_MESSAGE(dir, "set ACC_TEST_FSDP_RESUME_DIR");
  return dir;
}

constexpr int kStraightWorld = 2;
constexpr int kSaved = 5;    // batches before the checkpoint
constexpr int kResumed = 7;  // after it: 12 in all, into the second epoch of 8 batches
constexpr double kLr = 0.01;

// Three units, the Linear children of a Sequential (the Tanh ones have no parameters), of 117, 140
// and 33 elements: over 2 ranks the first and last are padded, over 3 the second, and a rank's slice
// on 3 ranks overlaps two of the slices saved on 2.
torch::nn::Sequential fresh_net() {
  torch::manual_seed(11);
  torch::nn::Sequential net(torch::nn::Linear(8, 13), torch::nn::Tanh(), torch::nn::Linear(13, 10), torch::nn::Tanh(),
                            torch::nn::Linear(10, 3));
  net->to(at::kDouble);  // float64: see worker.hpp's adamw_float64_drift
  return net;
}

// 48 fixed samples of a 3-class problem: 8 global batches of 6 per epoch.
struct Blobs {
  at::Tensor x, y;
  Blobs() {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(77);
    x = at::randn({48, 8}, generator, at::kDouble);
    y = x.narrow(1, 0, 3).argmax(1);
  }
  std::size_t size() const { return 48; }
  torch::data::Example<> get(std::size_t i) const { return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]}; }
};

template <class Sharding>
using FsdpOf = acc::Accelerator<acc::FSDP<acc::Gloo, Sharding>, acc::FP32, acc::Shuffled>;
using Fsdp = FsdpOf<acc::FullShard>;

acc::AcceleratorOptions split_options() { return acc::AcceleratorOptions().split_batches(true); }
// HYBRID_SHARD in shard groups of one rank: every rank holds whole units, replicated.
acc::AcceleratorOptions replicated_options() { return split_options().fsdp(acc::FSDPOptions().shard_group_size(1)); }

// AdamW's state of every unit, gathered from the ranks' shards (those of ranks 0 .. shards - 1,
// where the units are replicated): "<unit>.exp_avg" and "<unit>.exp_avg_sq" without the padding
// (which must hold zeros), and "<unit>.step", the same on every rank.
template <class Accelerator>
std::map<std::string, at::Tensor> full_optimizer_state(Accelerator& accelerator, torch::optim::AdamW& adamw) {
  std::map<std::string, at::Tensor> state;
  const auto layouts = accelerator.strategy().sharded_layout();
  const auto shards = accelerator.strategy().trained_parameters();
  REQUIRE(layouts.size() == shards.size());
  for (std::size_t u = 0; u < shards.size(); ++u) {
    CAPTURE(layouts[u].name);
    const auto& adam = adamw_state(adamw, shards[u]);
    for (const auto& [name, tensor] :
         {std::pair{"exp_avg", adam.exp_avg()}, std::pair{"exp_avg_sq", adam.exp_avg_sq()}}) {
      REQUIRE(tensor.numel() == layouts[u].shard_numel);
      const auto all =
          accelerator.gather(tensor.detach().reshape({1, -1})).narrow(0, 0, layouts[u].shards).reshape({-1}).cpu();
      REQUIRE(all.numel() == layouts[u].padded_numel);
      const auto padding = layouts[u].padded_numel - layouts[u].numel;
      CHECK(at::equal(all.narrow(0, layouts[u].numel, padding), at::zeros({padding}, all.options())));
      state[layouts[u].name + "." + name] = all.narrow(0, 0, layouts[u].numel).clone();
    }
    const auto steps = accelerator.gather_object(adam.step());
    for (const auto step : steps) CHECK(step == adam.step());
    state[layouts[u].name + ".step"] = at::scalar_tensor(adam.step(), at::kLong);
  }
  return state;
}

struct Trained {
  std::map<std::string, at::Tensor> parameters;              // in full
  std::map<std::string, at::Tensor> loaded_optimizer_state;  // right after load_state, when loading
};

// `count` batches (after load_state(from) when given), then save_state(to) when given, and
// `saved_optimizer_state`, when given, receives the optimizer's full state then.
template <class Sharding = acc::FullShard>
Trained train(int count, const fs::path& from = {}, const fs::path& to = {},
              std::map<std::string, at::Tensor>* saved_optimizer_state = nullptr,
              const acc::AcceleratorOptions& options = split_options()) {
  FsdpOf<Sharding> accelerator(options);
  auto net = fresh_net();
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(kLr));
  auto [model, optimizer, loader] =
      accelerator.prepare(net, adamw, acc::DataLoader(Blobs{}, acc::DataLoaderOptions(6).seed(5)));
  Trained trained;
  if (!from.empty()) {
    accelerator.load_state(from);
    trained.loaded_optimizer_state = full_optimizer_state(accelerator, adamw);
  }
  int done = 0;
  while (done < count) {
    for (auto& batch : loader) {
      REQUIRE(batch.data.size(0) == 6 / accelerator.num_processes());
      optimizer.zero_grad();
      accelerator.backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));
      optimizer.step();
      if (++done == count) break;
    }
  }
  if (!to.empty()) {
    accelerator.save_state(to);
    if (saved_optimizer_state) *saved_optimizer_state = full_optimizer_state(accelerator, adamw);
  }
  for (const auto& [name, value] : accelerator.strategy().full_state(*net)) trained.parameters[name] = value.clone();
  return trained;
}

void write_tensors(const std::map<std::string, at::Tensor>& tensors, const fs::path& file) {
  acc::safetensors::save_file({tensors.begin(), tensors.end()}, file);
}
std::map<std::string, at::Tensor> read_tensors(const fs::path& file) {
  return acc::safetensors::load_file(file).tensors;
}

int world_of_environment() { return acc::ProcessEnvironment::from_environment().world_size; }
bool main_process() { return acc::ProcessEnvironment::from_environment().is_main_process(); }

// The world size whose checkpoints a load phase resumes (ACC_TEST_FSDP_RESUME_FROM).
int saved_world() {
  const char* from = std::getenv("ACC_TEST_FSDP_RESUME_FROM");
  REQUIRE_MESSAGE(from, "set ACC_TEST_FSDP_RESUME_FROM");
  return std::stoi(from);
}

fs::path checkpoint_of(const std::string& kind, int world) {
  return resume_dir() / (kind + "_" + std::to_string(world));
}
fs::path optimizer_state_of(const std::string& kind, int world) {
  return resume_dir() / ("optimizer_" + kind + "_" + std::to_string(world) + ".safetensors");
}

// 5 batches and a checkpoint, D/<kind>_<world>, and the optimizer's full state then,
// D/optimizer_<kind>_<world>.safetensors.
template <class Sharding>
void save_checkpoint(const std::string& kind, const acc::AcceleratorOptions& options = split_options()) {
  const int world = world_of_environment();
  std::map<std::string, at::Tensor> optimizer_state;
  train<Sharding>(kSaved, {}, checkpoint_of(kind, world), &optimizer_state, options);
  if (main_process()) write_tensors(optimizer_state, optimizer_state_of(kind, world));
}

// Resumes the checkpoint of `kind` that `saved` processes wrote, with Sharding, for 7 batches:
// right after load_state the optimizer's state is the saved one, element for element (only moved
// between ranks), and at the end the parameters are the straight run's, within AdamW's drift bound
// of the steps that summed their gradient terms in another order than the straight run did.
template <class Sharding>
void resume_checkpoint(const std::string& kind, int saved, int other_order_steps) {
  CAPTURE(kind);
  const auto checkpoint = checkpoint_of(kind, saved);
  const auto resumed = train<Sharding>(kResumed, checkpoint);
  const auto saved_state = read_tensors(optimizer_state_of(kind, saved));
  CHECK(saved_state.size() == 9);  // 3 units: exp_avg, exp_avg_sq, step
  REQUIRE(resumed.loaded_optimizer_state.size() == saved_state.size());
  for (const auto& [name, tensor] : saved_state) {
    CAPTURE(name);
    REQUIRE(resumed.loaded_optimizer_state.count(name) == 1);
    CHECK(at::equal(resumed.loaded_optimizer_state.at(name), tensor));
  }
  CHECK(saved_state.at("0.step").item<int64_t>() == kSaved);

  const double tolerance = adamw_float64_drift(other_order_steps, kLr);
  const auto straight = read_tensors(resume_dir() / "straight.safetensors");
  REQUIRE(resumed.parameters.size() == straight.size());
  double largest = 0;
  for (const auto& [name, value] : straight) {
    CAPTURE(name);
    REQUIRE(resumed.parameters.count(name) == 1);
    CHECK(at::allclose(resumed.parameters.at(name), value, /*rtol=*/0, /*atol=*/tolerance));
    largest = std::max(largest, (resumed.parameters.at(name) - value).abs().max().template item<double>());
  }
  MESSAGE(kind, " of ", saved, " processes resumed on ", world_of_environment(), " with ", std::string(Sharding::name),
          ": parameters within ", largest, " of the straight run's (bound ", tolerance, ")");
  // The 7 steps after the checkpoint moved the parameters far beyond the tolerance.
  const auto at_checkpoint = read_tensors(checkpoint / "model.safetensors");
  CHECK(!at::allclose(resumed.parameters.at("2.weight"), at_checkpoint.at("2.weight"), 0, 1e-3));
}

}  // namespace

TEST_SUITE("fsdp_resume" * doctest::skip()) {
  TEST_CASE("fsdp_resume_straight: 12 batches uninterrupted on 2 ranks (FULL_SHARD)") {
    REQUIRE(world_of_environment() == kStraightWorld);
    const auto straight = train(kSaved + kResumed);
    if (main_process()) write_tensors(straight.parameters, resume_dir() / "straight.safetensors");
  }

  TEST_CASE("fsdp_resume_save: 5 batches and a checkpoint of each sharding strategy, and one SHARDED_STATE_DICT") {
    save_checkpoint<acc::FullShard>("full_shard");
    save_checkpoint<acc::ShardGradOp>("shard_grad_op");
    save_checkpoint<acc::NoShard>("no_shard");
    save_checkpoint<acc::HybridShard>("hybrid_shard", replicated_options());
    // Each rank's model shards: these stay bound to this number of processes.
    Fsdp sharded(split_options().fsdp(acc::FSDPOptions().state_dict_type(acc::FSDPOptions::StateDictType::sharded)));
    auto net = fresh_net();
    torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(kLr));
    [[maybe_unused]] auto prepared = sharded.prepare(net, adamw);
    sharded.save_state(checkpoint_of("sharded", world_of_environment()));
  }

  TEST_CASE("fsdp_resume_load: another number of processes resumes; the optimizer state is the saved one, moved") {
    const int saved = saved_world(), world = world_of_environment();
    REQUIRE(saved != world);
    {
      Fsdp sharded(split_options().fsdp(acc::FSDPOptions().state_dict_type(acc::FSDPOptions::StateDictType::sharded)));
      auto net = fresh_net();
      torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(kLr));
      [[maybe_unused]] auto prepared = sharded.prepare(net, adamw);
      const auto error = error_of([&] { sharded.load_state(checkpoint_of("sharded", saved)); });
      const auto saved_by =
          "saved by " + std::to_string(saved) + " processes, and this job has " + std::to_string(world);
      CHECK(error.find(saved_by + ", with fsdp_state_dict_type SHARDED_STATE_DICT") != std::string::npos);
      CHECK(error.find("acc merge-weights") != std::string::npos);
    }
    // Steps summed in another order than the straight run's (FULL_SHARD on 2 ranks): the 7 resumed
    // ones on another number of processes, and the 5 saved ones but FULL_SHARD's on 2 ranks (another
    // strategy reduces otherwise: all-reduce, or across replicas).
    const int resumed_steps = world != kStraightWorld ? kResumed : 0;
    resume_checkpoint<acc::FullShard>("full_shard", saved, (saved != kStraightWorld ? kSaved : 0) + resumed_steps);
    resume_checkpoint<acc::ShardGradOp>("shard_grad_op", saved, kSaved + resumed_steps);
    resume_checkpoint<acc::NoShard>("no_shard", saved, kSaved + resumed_steps);
    // Shard groups of one rank (units whole on every rank) become FULL_SHARD's shards.
    resume_checkpoint<acc::FullShard>("hybrid_shard", saved, kSaved + resumed_steps);
  }
}
#endif
