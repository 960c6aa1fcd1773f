// The C++ twin of Accelerate's examples/by_feature/ddp_comm_hook.py: DDP with a communication
// hook, what DDP does with each bucket of gradients. Python picks it at run time
// (DistributedDataParallelKwargs(comm_hook=...)); here it is DDP's second template parameter, the
// config's acc.ddp_comm_hook (set from --ddp_comm_hook) picks among the instantiations acc::run
// was given, and the DDPOptions of the config (acc.power_sgd_*) reach the hook. On one process
// there is no DDP and so no hook, as in Python. It checks what a hook must keep: every process
// ends with the same weights and the training loss falls; and that the hook ran: with several
// processes, a compressing hook leaves gradients that are values of its type, and PowerSGD
// reports that it sent fewer elements than a plain all-reduce would have.
//
//   build/bin/ddp_comm_hook
//   build/bin/acc launch --cpu --num_processes 2 build/bin/ddp_comm_hook --ddp_comm_hook power_sgd
#include "../common/accuracy.hpp"
#include "../common/flags.hpp"
#include "../common/points.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <boost/hana/flatten.hpp>
#include <boost/hana/tuple.hpp>

#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

struct Settings {
  std::string ddp_comm_hook = "fp16";  // Python's default is "no"; this twin is about a hook
  int64_t power_sgd_rank = 1;
  int64_t power_sgd_start_iter = 8;  // PyTorch's default, 1000, is longer than this whole run
  int64_t epochs = 4;
  int64_t batch_size = 16;
  double lr = 1e-2;
  int64_t train_size = 1024;
  int64_t eval_size = 301;
  int64_t seed = 0;
};

// DDP's hook; a process alone has none (acc::AllReduceHook stands for it).
template <class Strategy>
struct hook_of_strategy {
  using type = acc::AllReduceHook;
};
template <class Comm, class Hook>
struct hook_of_strategy<acc::DDP<Comm, Hook>> {
  using type = Hook;
};
template <class Strategy>
using hook_of = typename hook_of_strategy<Strategy>::type;

// The type a hook sends gradients in, if it compresses them.
template <class Hook>
constexpr std::optional<c10::ScalarType> compressed_type = std::nullopt;
template <c10::ScalarType Dtype>
constexpr std::optional<c10::ScalarType> compressed_type<acc::CompressionHook<Dtype>> = Dtype;

// A process alone, or DDP with each hook on whichever communicators this build has.
template <class Comm>
constexpr auto ddp_with_each_hook =
    acc::strategies<acc::DDP<Comm>, acc::DDP<Comm, acc::FP16CompressionHook>, acc::DDP<Comm, acc::BF16CompressionHook>,
                    acc::DDP<Comm, acc::PowerSGDHook>, acc::DDP<Comm, acc::BatchedPowerSGDHook>>;
constexpr auto kStrategies = boost::hana::flatten(boost::hana::make_tuple(acc::strategies<acc::Single>
#if ACC_HAS_GLOO
                                                                          ,
                                                                          ddp_with_each_hook<acc::Gloo>
#endif
#if ACC_HAS_NCCL
                                                                          ,
                                                                          ddp_with_each_hook<acc::Nccl>
#endif
                                                                          ));

// PowerSGD's account of what it sent, under DDP with a PowerSGD hook.
template <class Hook>
constexpr bool is_power_sgd = std::is_same_v<Hook, acc::PowerSGDHook> || std::is_same_v<Hook, acc::BatchedPowerSGDHook>;

// Whether every trained gradient is a value of `type` (the compressed average written back).
bool gradients_are(const torch::nn::Module& net, c10::ScalarType type) {
  for (const auto& p : net.parameters())
    if (p.grad().defined() && !p.grad().to(type).to(p.grad().scalar_type()).equal(p.grad())) return false;
  return true;
}

template <class Accelerator>
int train(Accelerator& accelerator, const Settings& s) {
  using Hook = hook_of<typename Accelerator::strategy_type>;
  const auto seed = static_cast<uint64_t>(s.seed);
  accelerator.set_seed(seed);
  torch::nn::Sequential net(torch::nn::Linear(8, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(s.lr));
  const auto options = acc::DataLoaderOptions(s.batch_size).seed(seed);
  auto [model, optimizer, train_loader, eval_loader] = accelerator.prepare(  // acc
      net, opt, acc::DataLoader(examples::Points(s.train_size, seed + 1), options),
      acc::DataLoader(examples::Points(s.eval_size, seed + 2), acc::DataLoaderOptions(options).shuffle(false)));

  // Only DDP calls the hook, and only with another process to average with.
  const auto hooked_type = accelerator.num_processes() > 1 ? compressed_type<Hook> : std::nullopt;
  bool hook_ran = true;
  std::vector<double> epoch_losses;
  for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
    train_loader.set_epoch(epoch);
    double total = 0;
    int64_t batches = 0;
    for (auto& batch : train_loader) {
      auto step = accelerator.accumulate(model);  // acc
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      accelerator.backward(loss);  // acc: each bucket's gradients go through the hook
      if (hooked_type && accelerator.sync_gradients()) hook_ran = hook_ran && gradients_are(*net, *hooked_type);  // acc
      optimizer.step();
      optimizer.zero_grad();
      total += acc::item<double>(loss);
      ++batches;
    }
    epoch_losses.push_back(total / static_cast<double>(batches));
    accelerator.print("epoch", epoch, "training loss", epoch_losses.back(), "accuracy",
                      examples::accuracy(accelerator, model, eval_loader));
  }

  bool same = true;
  for (const auto& p : net->parameters()) {
    const auto all = accelerator.gather(p.detach().reshape({1, -1}));  // acc: one row per process
    for (int64_t r = 1; r < all.size(0); ++r) same = same && all[r].equal(all[0]);
  }
  // The loss starts at about ln 4 = 1.39 (4 classes); the last epoch's mean is a fraction of the first's.
  const bool fell = epoch_losses.back() < 0.5 * epoch_losses.front();
  if constexpr (is_power_sgd<Hook>) {
    // The first power_sgd_start_iter steps all-reduce; the rest send low-rank factors.
    const double rate = accelerator.strategy().hook().compression_rate();
    accelerator.print("PowerSGD sent", rate, "times fewer elements than a plain all-reduce");
    hook_ran = accelerator.num_processes() == 1 || rate > 1;
  }
  const char* compressed = !hooked_type && !is_power_sgd<Hook> ? "(no compressing hook called)"
                           : hook_ran                          ? "yes"
                                                               : "no";
  accelerator.print("communication hook", s.ddp_comm_hook, "on", accelerator.num_processes(),
                    "processes; the same weights everywhere:", same ? "yes" : "no",
                    "; the loss fell:", fell ? "yes" : "no", "; gradients compressed by the hook:", compressed);
  if (!same || !fell || !hook_ran) {
    std::cerr << "ddp_comm_hook: expected the same weights on every process, a falling loss and the hook's "
                 "compressed gradients\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  examples::Flags("ddp_comm_hook", "Trains with DDP whose gradient buckets go through a communication hook.")
      .add("--ddp_comm_hook", s.ddp_comm_hook,
           "no (all-reduce), fp16 or bf16 (all-reduce in that type), power_sgd or batched_power_sgd")
      .add("--power_sgd_rank", s.power_sgd_rank, "PowerSGD's matrix approximation rank")
      .add("--power_sgd_start_iter", s.power_sgd_start_iter, "steps of plain all-reduce before PowerSGD")
      .add("--epochs", s.epochs, "passes over the training set")
      .add("--batch_size", s.batch_size, "examples per batch and process")
      .add("--lr", s.lr, "AdamW's learning rate")
      .add("--train_size", s.train_size, "training examples")
      .add("--eval_size", s.eval_size, "evaluation examples")
      .add("--seed", s.seed, "seed of the data and the model")
      .parse(argc, argv);
  try {
    auto config = acc::Config::from_environment();  // acc
    config.sampler = "shuffled";                    // training wants shuffled batches whatever acc.sampler says
    config.ddp_comm_hook = s.ddp_comm_hook;
    config.power_sgd_rank = static_cast<int>(s.power_sgd_rank);
    config.power_sgd_start_iter = static_cast<int>(s.power_sgd_start_iter);
    return acc::run(  // acc
        config, [&](auto& accelerator) { return train(accelerator, s); }, kStrategies,
        acc::precisions<ACC_DEFAULT_PRECISIONS>, acc::samplers<acc::Shuffled>);
  } catch (const std::exception& e) {
    std::cerr << "ddp_comm_hook: " << e.what() << "\n";
    return 1;
  }
}
