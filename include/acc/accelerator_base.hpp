// acc::detail::AcceleratorBase<Strategy>: the part of an Accelerator that depends on its strategy
// alone (processes, gradient synchronization scopes, collectives, checkpoints, trackers). Every
// Accelerator<Strategy, Precision, Sampler> derives from it, so that a program built for several
// precisions and samplers compiles this part once per strategy; with ACC_SEPARATE_COMPILATION the
// strategies acc::run builds by default have it compiled in acc::compiled (acc/prebuilt.hpp).
#pragma once

#include <acc/accelerator_options.hpp>
#include <acc/checkpoint/checkpointer.hpp>
#include <acc/config/environment.hpp>
#include <acc/data/dataloader.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/unit.hpp>
#include <acc/memory/free_memory.hpp>
#include <acc/ops/collectives.hpp>
#include <acc/prepared/scheduler.hpp>
#include <acc/prepared/step_key.hpp>
#include <acc/strategy/strategy.hpp>
#include <acc/tracking/trackers.hpp>
#include <acc/tracking/value.hpp>

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/full.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace acc {
namespace detail {

template <class T>
struct is_vector_of : std::false_type {};
template <class T>
struct is_vector_of<std::vector<T>> : std::true_type {};
template <class T, class = void>
struct has_unwrap : std::false_type {};
template <class T>
struct has_unwrap<T, std::void_t<decltype(std::declval<const T&>().unwrap())>> : std::true_type {};

template <class Strategy>
class AcceleratorBase {
  static_assert(is_strategy_policy_v<Strategy>,
                "Accelerator's first parameter must be a strategy policy: acc::Single, acc::CPU, acc::DDP<Comm, Hook> "
                "or acc::FSDP<Comm, Sharding> "
                "(see include/acc/strategy/strategy.hpp for what a strategy provides)");

 public:
  using strategy_type = Strategy;

  AcceleratorBase(const AcceleratorBase&) = delete;
  AcceleratorBase& operator=(const AcceleratorBase&) = delete;

  // --- Gradient accumulation.

  int64_t gradient_accumulation_steps() const { return options_.gradient_accumulation_steps(); }
  // Changes the number of micro-batches per optimizer step from the next accumulate() on (Python
  // sets accelerator.gradient_accumulation_steps); the count of the current step starts again.
  void gradient_accumulation_steps(int64_t steps) {
    check_accumulation_steps(steps);
    options_.gradient_accumulation_steps(steps);
    training_.micro_step = 0;
  }

  // Python's GradientAccumulationPlugin fields, also after construction (acc::run builds the
  // Accelerator from the config): see AcceleratorOptions. They take effect at the next accumulate().
  bool sync_with_dataloader() const { return options_.sync_with_dataloader(); }
  void sync_with_dataloader(bool enabled) { options_.sync_with_dataloader(enabled); }
  bool sync_each_batch() const { return options_.sync_each_batch(); }
  void sync_each_batch(bool enabled) { options_.sync_each_batch(enabled); }

  // Called at the start of every backward with whether it averages gradients across processes
  // (acc::JoinUnevenInputs counts the processes still training this way); nullptr: nothing.
  void before_backward(std::function<void(bool averages_gradients)> observer) {
    before_backward_ = std::move(observer);
  }

  // Whether the current step synchronizes gradients and steps the optimizer.
  bool sync_gradients() const { return sync_gradients_; }

  // Scope of accumulate() or no_sync(): sets whether this step synchronizes and steps, and
  // whether backward communicates, and restores both at its end.
  class GradientSyncScope {
   public:
    GradientSyncScope(AcceleratorBase& owner, bool sync, bool local_only)
        : owner_(owner), previous_sync_(owner.sync_gradients_), previous_local_only_(owner.local_only_) {
      owner_.sync_gradients_ = sync;
      owner_.local_only_ = local_only;
      owner_.communicate_when_synchronizing();
    }
    ~GradientSyncScope() {
      owner_.sync_gradients_ = previous_sync_;
      owner_.local_only_ = previous_local_only_;
      owner_.communicate_when_synchronizing();
    }
    GradientSyncScope(const GradientSyncScope&) = delete;
    GradientSyncScope& operator=(const GradientSyncScope&) = delete;

   private:
    AcceleratorBase& owner_;
    bool previous_sync_;
    bool previous_local_only_;
  };
  // Scope of one micro-batch: gradients are synchronized and the prepared optimizer and
  // scheduler step only on every gradient_accumulation_steps-th one, and on the last batch of the
  // prepared loader in use (unless sync_with_dataloader is off); with sync_each_batch, gradients are
  // synchronized on every one. Inside no_sync() backward still does not communicate.
  // `{ auto step = accelerator.accumulate(model); ... }`
  template <class... Models>
  GradientSyncScope accumulate(const Models&...) {
    bool sync;
    const auto* loader = active_loaders_->innermost();
    if (loader && loader->end_of_dataloader && options_.sync_with_dataloader()) {
      training_.micro_step = 0;
      sync = true;
    } else {
      sync = ++training_.micro_step % options_.gradient_accumulation_steps() == 0;
    }
    return GradientSyncScope(*this, sync, local_only_);
  }
  // Scope in which backward only accumulates gradients locally (no communication), as Python's
  // no_sync: the prepared optimizer and scheduler still step when told to (accumulate decides
  // that), on the local gradients.
  template <class... Models>
  GradientSyncScope no_sync(const Models&...) {
    return GradientSyncScope(*this, sync_gradients_, true);
  }

  // Whether loaders prepared from now on give every process the same number of batches.
  void set_even_batches(bool even) { options_.even_batches(even); }
  // Whether the main process reads the batches of loaders prepared from now on and sends each
  // process its own (unset: streams only).
  void set_dispatch_batches(std::optional<bool> dispatch) { options_.dispatch_batches(dispatch); }

  c10::Device device() const { return device_; }
  // The config's name of this Accelerator's strategy, as Python's accelerator.distributed_type
  // spells it ("MULTI_CPU", ...): for code inside acc::run's generic function.
  static std::string distributed_type() { return std::string(Strategy::name); }
  const ProcessEnvironment& environment() const { return environment_; }
  const AcceleratorOptions& options() const { return options_; }
  // Where checkpoints and trackers go (Python's accelerator.project_configuration); a program that
  // acc::run configured sets it here, before its first save_state or init_trackers.
  ProjectConfiguration& project_configuration() { return options_.project_config(); }
  Strategy& strategy() { return strategy_; }
  int process_index() const { return environment().rank; }
  int local_process_index() const { return environment().local_rank; }
  int num_processes() const { return environment().world_size; }
  bool is_main_process() const { return environment().is_main_process(); }
  bool is_local_main_process() const { return environment().is_local_main_process(); }

  // Prints its arguments separated by spaces, on the main process only.
  template <class... Args>
  void print(const Args&... args) const {
    if (!is_main_process()) return;
    std::ostringstream line;
    const char* separator = "";
    ((line << separator << args, separator = " "), ...);
    std::cout << line.str() << std::endl;
  }

  // Seeds libtorch's CPU and CUDA generators; device_specific adds the process index.
  void set_seed(uint64_t seed, bool device_specific = false) const {
    at::manual_seed(seed + (device_specific ? static_cast<uint64_t>(process_index()) : 0));
  }

  // --- Collectives: on a tensor or a nested vector/pair/tuple/map of tensors; every process must
  // call them in the same order (see include/acc/ops/collectives.hpp).

  // All processes' values concatenated along the first dimension, which may differ in size.
  template <class Tree>
  Tree gather(const Tree& value) {
    return ops::gather(strategy_.comm(), value);
  }

  // gather() for evaluation: on the last batch of the prepared loader in use (the innermost
  // loop's), drops the samples that its even_batches repeated, so that an epoch gathers exactly
  // the dataset, in order. Outside every prepared loader it drops nothing. Beside tensor
  // parallelism the ranks of a tp group read the same batches, and the group's first rank's values
  // stand for it: give values that are whole on every rank of the group (the vocabulary-parallel
  // loss is; vocabulary-parallel logits are not).
  template <class Tree>
  Tree gather_for_metrics(const Tree& value) {
    const int tp = detail::tensor_parallel_size(strategy_);
    auto gathered = tp == 1 ? gather(value) : gather(detail::map_tensors(value, [&](const at::Tensor& t) {
      return process_index() % tp == 0 ? t : (t.dim() == 0 ? t.reshape({1}) : t).narrow(0, 0, 0);
    }));
    const auto* loader = active_loaders_->innermost();
    if (!loader || !loader->end_of_dataloader || loader->duplicates == 0) return gathered;
    return detail::map_tensors(gathered, [&](const at::Tensor& t) {
      return t.narrow(0, 0, std::max<int64_t>(0, t.size(0) - loader->duplicates));
    });
  }

  template <class Tree>
  Tree reduce(const Tree& value, ReduceOp op = ReduceOp::sum) {
    return ops::reduce(strategy_.comm(), value, op);
  }

  template <class Tree>
  Tree broadcast(const Tree& value, int from = 0) {
    return ops::broadcast(strategy_.comm(), value, from);
  }

  template <class Tree>
  Tree pad_across_processes(const Tree& value, int64_t dim = 0, double pad_value = 0, bool pad_first = false) {
    return ops::pad_across_processes(strategy_.comm(), value, dim, pad_value, pad_first);
  }

  // Strings, trivially copyable values, and vectors of them; gather_object returns one per rank.
  template <class T>
  std::vector<T> gather_object(const T& object) {
    return ops::gather_object(strategy_.comm(), object);
  }
  template <class T>
  T broadcast_object(const T& object, int from = 0) {
    return ops::broadcast_object(strategy_.comm(), object, from);
  }

  void wait_for_everyone() { strategy_.comm().barrier(); }

  // Early stopping across processes (Python's set_trigger/check_trigger): any process may set the
  // trigger; check_trigger, called by every process at the same point, is true on all of them
  // when one set it since the last check, and clears it.
  void set_trigger() { trigger_ = true; }
  bool check_trigger() {
    auto flag = at::full({1}, trigger_ ? 1.0 : 0.0, at::TensorOptions(device_).dtype(at::kFloat));
    strategy_.comm().all_reduce(flag, ReduceOp::max);
    const bool set = flag.item<float>() > 0;
    if (set) trigger_ = false;
    return set;
  }

  // Scope in which the main process runs first and the others wait for it (to download or
  // preprocess once): `{ auto first = accelerator.main_process_first(); ... }`.
  class MainProcessFirst {
   public:
    explicit MainProcessFirst(AcceleratorBase& owner) : owner_(owner) {
      if (!owner_.is_main_process()) owner_.wait_for_everyone();
    }
    ~MainProcessFirst() noexcept(false) {
      if (owner_.is_main_process()) owner_.wait_for_everyone();
    }
    MainProcessFirst(const MainProcessFirst&) = delete;
    MainProcessFirst& operator=(const MainProcessFirst&) = delete;

   private:
    AcceleratorBase& owner_;
  };
  MainProcessFirst main_process_first() { return MainProcessFirst(*this); }

  // This process's contiguous share of a vector or of a tensor's rows; the first processes get
  // one more when the count does not divide. apply_padding repeats a share's last item so that
  // every process gets the same count.
  template <class Items>
  Items split_between_processes(const Items& items, bool apply_padding = false) const {
    int64_t count = 0;
    if constexpr (std::is_same_v<Items, at::Tensor>)
      count = items.dim() == 0 ? 1 : items.size(0);
    else
      count = static_cast<int64_t>(items.size());
    const int64_t world = num_processes(), rank = process_index();
    const int64_t base = count / world, extra = count % world;
    const int64_t begin = rank * base + std::min(rank, extra);
    const int64_t size = base + (rank < extra ? 1 : 0);
    const int64_t wanted = apply_padding && extra > 0 ? base + 1 : size;
    if constexpr (std::is_same_v<Items, at::Tensor>) {
      if (count == 0) return items;
      auto share = items.narrow(0, std::min(begin, count - 1), size);
      if (wanted > size) {
        const auto last = size > 0 ? share.narrow(0, size - 1, 1) : items.narrow(0, count - 1, 1);
        auto sizes = last.sizes().vec();
        sizes[0] = wanted - size;
        share = at::cat({share, last.expand(sizes)}, 0);
      }
      return share;
    } else {
      static_assert(detail::is_vector_of<Items>::value, "split_between_processes takes a std::vector or a tensor");
      Items share(items.begin() + begin, items.begin() + begin + size);
      if (count > 0)
        while (static_cast<int64_t>(share.size()) < wanted)
          share.push_back(share.empty() ? items.back() : share.back());
      return share;
    }
  }

  // --- Checkpoints (see include/acc/checkpoint/checkpointer.hpp for the directory's contents;
  // save_state and load_state are the Accelerator's, which knows the loss scaler).

  // Objects saved and loaded with the state, in registration order: anything with
  // save(torch::serialize::OutputArchive&) const and load(torch::serialize::InputArchive&), such
  // as a torch::nn::Module (pass *holder). Kept by reference.
  template <class... Objects>
  void register_for_checkpointing(Objects&... objects) {
    static_assert((is_checkpointable_v<Objects> && ...),
                  "register_for_checkpointing takes objects with save(torch::serialize::OutputArchive&) const and "
                  "load(torch::serialize::InputArchive&) (for a module holder, pass *holder)");
    (checkpoints_.register_object(objects), ...);
  }

  // The model's weights alone, consolidated, as dir/model.safetensors (for inference, or Python's
  // safetensors.torch.load_file), or, when they are larger than max_shard_size (bytes, or "10GB",
  // "500MB", "2GiB", ...; see acc::ShardSize), as model-00001-of-0000N.safetensors ... with
  // model.safetensors.index.json, as Python's save_model writes them. load_model reads a file, or
  // a directory holding either form.
  template <class Model>
  void save_model(const Model& model, const std::filesystem::path& dir,
                  const ShardSize& max_shard_size = weights::kDefaultMaxShardSize) {
    checkpoints_.save_model(*holder_of(model), dir, max_shard_size);
  }
  template <class Model>
  void load_model(Model& model, const std::filesystem::path& path) {
    checkpoints_.load_model(*holder_of(model), path);
  }

  // Python's free_memory: forgets every prepared model, optimizer, scheduler and data loader
  // (checkpoints hold none of them; DDP's gradient buckets and FSDP's units go), starts the
  // gradient accumulation count again and gives cached device memory back (acc::free_memory).
  // Objects registered for checkpointing stay. Prepare new objects, or the same again, to go on.
  void free_memory() {
    checkpoints_.forget_prepared();
    strategy_.release();
    training_ = {};
    step_skipped_ = false;
    skips_on_device_ = false;
    acc::free_memory();
  }

  // --- Experiment tracking (Python's init_trackers/log/end_training; see
  // include/acc/tracking/trackers.hpp).

  // Starts the trackers that AcceleratorOptions().log_with names, on the main process, under the
  // ProjectConfiguration's logging_dir/project_name, and stores `config` (hyperparameters) in each.
  void init_trackers(const std::string& project_name, const TrackedValues& config = {}) {
    trackers_.start(project_name, options_.project_config().logging_dir(), is_main_process(), config);
  }
  // `accelerator.log({{"loss", loss.item<double>()}}, step)`: to every tracker of this process.
  void log(const TrackedValues& values, std::optional<int64_t> step = std::nullopt) { trackers_.log(values, step); }
  void end_training() { trackers_.finish(); }
  // The running tracker of that name ("jsonl", ...), or nullptr (not running, or not the main process).
  Tracker* get_tracker(std::string_view name) const { return trackers_.get(name); }
  // To add trackers of the program's own before init_trackers.
  Trackers& trackers() { return trackers_; }

  bool optimizer_step_was_skipped() const {
    // Read only when asked: a sync-free step (or a CUDA graph's replay of one) left it on the device.
    if (skips_on_device_) return skipped_on_device_.item<float>() > 0;
    return step_skipped_;
  }

  // Called by the prepared scheduler only (it holds the key): as many steps as batches read, one
  // per data-parallel rank (a tensor-parallel group reads one).
  int scheduler_steps_per_step(detail::StepKey) const {
    return options_.split_batches() ? 1 : num_processes() / detail::tensor_parallel_size(strategy_);
  }

 protected:
  // `precision` and `sampler` are the derived Accelerator's policies' names (recorded in
  // checkpoints); a sharding strategy computes in `compute_dtype`.
  AcceleratorBase(AcceleratorOptions&& options, std::string_view precision, std::string_view sampler,
                  std::optional<c10::ScalarType> compute_dtype);
  ~AcceleratorBase();

  static void check_accumulation_steps(int64_t steps) {
    if (steps < 1) throw Error("gradient_accumulation_steps is " + std::to_string(steps) + "; it must be at least 1");
  }

  template <class Model>
  static auto holder_of(const Model& model) {
    if constexpr (detail::has_unwrap<Model>::value)
      return model.unwrap();
    else
      return model;
  }

  // prepare()'s parts that depend on the strategy alone, compiled once per strategy whatever the
  // precision, sampler and model (in acc::compiled for the strategies acc/prebuilt.hpp names): a
  // model placed (bucketed or sharded) and tracked for checkpoints, after the precision prepared
  // it; an optimizer tracked (its registration, for the prepared optimizer to hold); a scheduler
  // wrapped; a loader sharded and placed with the sampler's order.
  void prepare_model(const std::shared_ptr<torch::nn::Module>& module);
  std::shared_ptr<const void> prepare_optimizer(torch::optim::Optimizer& optimizer);
  template <class Scheduler>
  PreparedScheduler<Scheduler, AcceleratorBase> prepare_scheduler(Scheduler& scheduler) {
    return PreparedScheduler<Scheduler, AcceleratorBase>(scheduler, *this, checkpoints_.track_scheduler(scheduler));
  }
  template <class Sampler, class Loader>
  auto prepare_loader(const Loader& loader) {
    // With tensor parallelism the ranks of a tp group (consecutive) read the same batches.
    const int tp = detail::tensor_parallel_size(strategy_);
    if (tp > 1 && options_.dispatch_batches().value_or(false))
      throw Error(
          "dispatch_batches sends each process its own batches from the main process, but with tensor "
          "parallelism (parallelism_config_tp_size " +
          std::to_string(tp) + ") the ranks of a tp group read the same ones; leave dispatch_batches off");
    const Sharding sharding{process_index() / tp, num_processes() / tp, options_.even_batches(),
                            options_.split_batches(),
                            tp > 1 ? std::optional<bool>(false) : options_.dispatch_batches()};
    // Rank 0's seed, so that every rank draws the same order even if their seeds differ.
    const auto seed = broadcast_object(loader.options().seed());
    const MainProcessBroadcast broadcast{[this](at::Tensor& t) { strategy_.comm().broadcast(t, 0); },
                                         strategy_.comm().device()};
    auto placed = loader.template placed<Sampler>({sharding, device_, seed, active_loaders_, broadcast});
    int64_t samples = -1;  // a stream's size is unknown
    if constexpr (!detail::is_stream<std::decay_t<decltype(loader.dataset())>>::value)
      samples = static_cast<int64_t>(detail::dataset_size(loader.dataset()));
    checkpoints_.track_loader(placed.position(), loader.options().batch_size(), samples, sharding.split_batches);
    return placed;
  }

  // backward's parts that depend on the strategy alone: the loss divided for gradient
  // accumulation (after telling the before_backward observer), and the strategy's backward of
  // the loss the precision scaled.
  at::Tensor loss_for_backward(const at::Tensor& loss);
  void backward_scaled(const at::Tensor& scaled_loss);
  // Waits for the strategy's gradient collectives (idempotent), before unscaling and stepping.
  void synchronize_gradients();

  // The tensors whose gradients the optimizer uses: a sharding strategy's shards stand for the
  // model's parameters.
  std::vector<at::Tensor> trained(const std::vector<at::Tensor>& parameters) {
    if constexpr (shards_model_v<Strategy>)
      return strategy_.trained_parameters();
    else
      return parameters;
  }

  // backward communicates on a synchronizing step (on every one with sync_each_batch) outside no_sync.
  bool communicates() const { return (sync_gradients_ || options_.sync_each_batch()) && !local_only_; }
  void communicate_when_synchronizing() { strategy_.set_gradient_sync(communicates()); }

  // The part of the options that a policy's options_type names.
  template <class Part>
  static const Part& options_part(const AcceleratorOptions& options) {
    if constexpr (std::is_same_v<Part, DDPOptions>) {
      return options.ddp();
    } else if constexpr (std::is_same_v<Part, FSDPOptions>) {
      return options.fsdp();
    } else if constexpr (std::is_same_v<Part, FP8Recipe>) {
      return options.fp8();
    } else {
      static_assert(std::is_same_v<Part, ProcessGroupOptions>,
                    "a policy's options_type names DDPOptions, FSDPOptions, ProcessGroupOptions or FP8Recipe; for "
                    "options of another type, give AcceleratorOptions a member of it and return it here");
      return options.process_group();
    }
  }

  AcceleratorOptions options_;
  ProcessEnvironment environment_;  // options_.environment(), else this process's
  Strategy strategy_;
  c10::Device device_;
  std::shared_ptr<ActiveLoaders> active_loaders_;
  bool step_skipped_ = false;
  bool skips_on_device_ = false;  // the last step's overflow flag is skipped_on_device_, on the device
  at::Tensor skipped_on_device_;
  std::function<void(bool)> before_backward_;
  bool sync_gradients_ = true;
  bool local_only_ = false;  // inside no_sync
  bool trigger_ = false;     // set_trigger since the last check_trigger
  TrainingState training_;
  // The objects prepared and registered, saved and loaded with training_.
  Checkpointer<Strategy> checkpoints_;
  Trackers trackers_;

 private:
  // The strategy, made from the parts of the options its options_type names.
  template <class... Parts>
  static Strategy make_strategy(const AcceleratorOptions& options, std::tuple<Parts...>*) {
    return Strategy(options_part<Parts>(options)...);
  }
};

// Out of the class, so that an explicit instantiation declaration (acc/prebuilt.hpp) keeps them
// out of the translation units that use a prebuilt strategy (it does not keep inline members out).
template <class Strategy>
AcceleratorBase<Strategy>::AcceleratorBase(AcceleratorOptions&& options, std::string_view precision,
                                           std::string_view sampler, std::optional<c10::ScalarType> compute_dtype)
    : options_(std::move(options)),
      environment_(options_.environment() ? *options_.environment() : ProcessEnvironment::from_environment()),
      strategy_(make_strategy(options_, static_cast<typename Strategy::options_type*>(nullptr))),
      device_(strategy_.device(environment_, options_.cpu())),
      active_loaders_(std::make_shared<ActiveLoaders>()),
      checkpoints_(strategy_, {environment_, options_.project_config(), training_,
                               options_.gradient_accumulation_steps(), device_, precision, sampler}),
      trackers_(options_.log_with()) {
  check_accumulation_steps(options_.gradient_accumulation_steps());
  if constexpr (shards_model_v<Strategy>) strategy_.compute_dtype(compute_dtype);
  const auto& requested = environment_.mixed_precision;
  if (requested && *requested != precision && is_main_process())
    std::cerr << "acc: ACCELERATE_MIXED_PRECISION=" << *requested << " is ignored: this Accelerator was built with "
              << precision << " (choose the precision at run time with acc::run)\n";
}

template <class Strategy>
AcceleratorBase<Strategy>::~AcceleratorBase() = default;

template <class Strategy>
void AcceleratorBase<Strategy>::prepare_model(const std::shared_ptr<torch::nn::Module>& module) {
  strategy_.prepare_model(module, device_);
  if (options_.activation_checkpointing() && detail::checkpoint_units(*module, true) == 0)
    throw Error(
        "activation checkpointing is on (AcceleratorOptions::activation_checkpointing, or the config's "
        "fsdp_activation_checkpointing) but the model prepared has no units to checkpoint: hold its blocks "
        "through acc::Unit<...> (include/acc/fsdp/unit.hpp) or make it a torch::nn::Sequential");
  checkpoints_.track_model(module);
}

template <class Strategy>
at::Tensor AcceleratorBase<Strategy>::loss_for_backward(const at::Tensor& loss) {
  if (before_backward_) before_backward_(communicates());
  const auto steps = options_.gradient_accumulation_steps();
  return steps > 1 ? loss / static_cast<double>(steps) : loss;
}

template <class Strategy>
void AcceleratorBase<Strategy>::backward_scaled(const at::Tensor& scaled_loss) {
  strategy_.backward(scaled_loss);
}

template <class Strategy>
void AcceleratorBase<Strategy>::synchronize_gradients() {
  strategy_.synchronize_gradients();
}

template <class Strategy>
std::shared_ptr<const void> AcceleratorBase<Strategy>::prepare_optimizer(torch::optim::Optimizer& optimizer) {
  if constexpr (shards_model_v<Strategy>) strategy_.prepare_optimizer(optimizer);
  return checkpoints_.track_optimizer(optimizer);
}

}  // namespace detail
}  // namespace acc
