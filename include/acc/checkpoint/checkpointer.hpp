// What Accelerator::save_state writes and load_state reads: the objects prepare() tracked and
// those registered for checkpointing, in a directory laid out as Python Accelerate's:
//
//   model.safetensors, model_1.safetensors, ...   each prepared model's parameters and buffers,
//                                                  from the strategy's full_state (main process)
//   model_rank<r>.safetensors, ...                instead, with FSDP's SHARDED_STATE_DICT: each
//                                                  rank's own flat shards and their layout (no
//                                                  gather; see checkpoint/weight_shards.hpp)
//   optimizer.bin, optimizer_1.bin, ...           each prepared optimizer (torch archive, main); with
//                                                 FSDP each rank's shards' state: optimizer_rank<r>.bin,
//                                                 dealt out again on another number of processes
//                                                 (checkpoint/optimizer_shards.hpp)
//   scheduler.bin, scheduler_1.bin, ...           each prepared LR scheduler's step count (main); an
//                                                 acc::optim::WarmupSchedule's whole state (save())
//   scaler.pt                                     the GradScaler's scale and growth tracker (main)
//   custom_checkpoint_0.bin, ...                  each registered object's save() (main)
//   random_states_<rank>.bin                      every process's CPU and CUDA generators
//   gradients_<rank>.safetensors                  saved in the middle of a gradient accumulation
//                                                  cycle: every process's accumulated gradients
//   acc_state.json                                written last: world size, strategy, precision,
//                                                  every file's size and CRC-32C, the gradient
//                                                  accumulation step, every prepared loader's seed
//                                                  and position, and with FSDP how each unit is split
//
// A save is atomic: everything goes into a temporary sibling directory, is synced to disk, and
// the directory is renamed over the target; a failure on any rank (a full disk among them, named
// with the bytes needed and free) removes the temporary directory and throws on every rank, leaving
// the previous checkpoint as it was; a temporary directory that a killed save left is removed by
// the next save of that target. A load checks every file listed (presence, size, CRC-32C of the
// bytes as they are read, format) on every rank before it changes anything. Every process must see
// the same file system (as with Python Accelerate).
//
// With automatic naming, the main process locks project_dir (project_dir/checkpoints/.lock) from its
// first save_state() or load_state() on, so that a second job there fails rather than overwrite
// and prune this one's checkpoints; load_state() loads the newest intact checkpoint, passing over
// damaged ones with a warning; total_limit removes old checkpoints only after the new one reads
// back as written.
#pragma once

#include <acc/checkpoint/checkpoint_io.hpp>
#include <acc/checkpoint/metadata.hpp>
#include <acc/checkpoint/model_files.hpp>
#include <acc/checkpoint/optimizer_shards.hpp>
#include <acc/checkpoint/project_configuration.hpp>
#include <acc/checkpoint/rng_state.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/config/environment.hpp>
#include <acc/data/dataloader.hpp>
#include <acc/detail/files.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/detail/torch_compat.hpp>
#include <acc/error.hpp>
#include <acc/ops/collectives.hpp>
#include <acc/precision/grad_scaler.hpp>
#include <acc/strategy/strategy.hpp>
#include <acc/version.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {

// What register_for_checkpointing takes: an object with
//   void save(torch::serialize::OutputArchive&) const;  and  void load(torch::serialize::InputArchive&);
// as torch::nn::Module has (register `*holder` for a module holder).
template <class T, class = void>
struct is_checkpointable : std::false_type {};
template <class T>
struct is_checkpointable<
    T, std::void_t<decltype(std::declval<const T&>().save(std::declval<torch::serialize::OutputArchive&>())),
                   decltype(std::declval<T&>().load(std::declval<torch::serialize::InputArchive&>()))>>
    : std::true_type {};
template <class T>
inline constexpr bool is_checkpointable_v = is_checkpointable<T>::value;

// The training position of an Accelerator that checkpoints save and restore.
struct TrainingState {
  int64_t micro_step = 0;  // the micro-batches accumulate() counted
};

// What a Checkpointer uses of the Accelerator that owns it (and outlives it), besides its strategy.
struct CheckpointSubject {
  const ProcessEnvironment& environment;  // rank and world size
  const ProjectConfiguration& project;    // where numbered checkpoints go
  TrainingState& training;
  const int64_t& gradient_accumulation_steps;  // may change between checkpoints
  c10::Device device;                          // where optimizer state is loaded
  std::string_view precision;                  // the policies' names, recorded in acc_state.json
  std::string_view sampler;
};

// One model's SHARDED_STATE_DICT part on this rank: its flat shards, the entries kept whole
// (written by the main process only) and their layout (world_size and rank filled in by the writer).
struct ShardedModelState {
  ShardedStateLayout layout;
  std::vector<std::pair<std::string, at::Tensor>> shards;  // "<unit>.flat_shard" -> this rank's shard
  std::vector<std::pair<std::string, at::Tensor>> whole;   // buffers and parameters of no unit
};

namespace detail {

// A strategy whose checkpoints may hold each rank's shards (FSDP's SHARDED_STATE_DICT).
template <class S, class = void>
struct has_sharded_checkpoints : std::false_type {};
template <class S>
struct has_sharded_checkpoints<S, std::void_t<decltype(std::declval<const S&>().sharded_checkpoints()),
                                              decltype(std::declval<S&>().sharded_layout())>> : std::true_type {};

// What the checkpointer's core needs of the strategy besides the subject: its names, whether each
// rank's optimizer holds shards (a file per rank then) and how they are split, and two collectives
// over bytes. With these, one non-template body serves every strategy (compiled once with
// ACC_SEPARATE_COMPILATION).
struct CheckpointContext : CheckpointSubject {
  std::string_view strategy;  // Strategy::name and Strategy::checkpoint_layout, in acc_state.json
  std::string_view layout;
  bool sharded_optimizer;    // each rank's optimizer holds its own state (shards, tp slices): a file per rank
  bool sharded_model;        // save_state writes each rank's model shards (SHARDED_STATE_DICT)
  int tensor_parallel_size;  // the ranks of a tensor-parallel group (1: none), recorded in acc_state.json
  std::function<std::vector<std::string>(const std::string&)> gather;  // every rank's bytes, by rank
  std::function<std::string(const std::string&)> broadcast;            // the main process's bytes
  // With sharded_optimizer: the units, in order, each with this rank's shard, which the optimizer steps.
  std::function<std::vector<OptimizerShard>()> optimizer_shards;
};

// Everything of a Checkpointer but the models' full states, which need the module's type.
class CheckpointerCore {
 public:
  explicit CheckpointerCore(CheckpointContext context) : subject_(std::move(context)) {}
  CheckpointerCore(const CheckpointerCore&) = delete;
  CheckpointerCore& operator=(const CheckpointerCore&) = delete;

  // --- Called by prepare() and register_for_checkpointing. Prepared objects are tracked while
  // they live: a model while its module does, a data loader while a copy of it does, an optimizer
  // or scheduler while the handle returned here does (the prepared object holds it; the
  // checkpointer cannot see the object itself go). Preparing an object again tracks it once.
  using Registration = std::shared_ptr<const void>;
  Registration track_optimizer(torch::optim::Optimizer& optimizer) { return track(optimizers_, optimizer); }
  Registration track_scheduler(torch::optim::LRScheduler& scheduler) { return track(schedulers_, scheduler); }
  void track_loader(const std::shared_ptr<LoaderPosition>& position, int64_t batch_size, int64_t dataset_size,
                    bool split_batches);
  // Accelerator::free_memory: no prepared object is saved or loaded any more (registered objects stay).
  void forget_prepared();
  template <class T>
  void register_object(T& object) {
    objects_.push_back({[&object](torch::serialize::OutputArchive& archive) { object.save(archive); },
                        [&object](torch::serialize::InputArchive& archive) { object.load(archive); }});
  }

  // --- save_state / load_state: an empty dir means automatic naming (see ProjectConfiguration).
  // With loss scaling, `scaler` is the Accelerator's GradScaler (nullptr without).
  std::filesystem::path save(const std::filesystem::path& dir, const GradScaler* scaler);
  std::filesystem::path load(const std::filesystem::path& dir, GradScaler* scaler);

 protected:
  static constexpr const char* kModelFile = "model.safetensors";
  static constexpr const char* kScalerFile = "scaler.pt";

  struct TrackedModel {
    std::weak_ptr<torch::nn::Module> module;
    std::function<std::vector<std::pair<std::string, at::Tensor>>()> full_state;
    std::function<void(const std::map<std::string, at::Tensor>&)> load_full_state;
    std::function<std::vector<std::pair<std::string, at::Tensor>>()> parameters;  // this process's
    // With a strategy that has them (FSDP): this rank's shards, and loading them back (shards by
    // their keys and the whole entries by name, in one map).
    std::function<ShardedModelState()> sharded_state;
    std::function<void(const std::map<std::string, at::Tensor>&)> load_sharded_state;
    bool gone() const { return module.expired(); }
  };
  template <class T>
  struct Tracked {
    T* object;
    std::weak_ptr<const void> registration;
    bool gone() const { return registration.expired(); }
  };
  struct TrackedLoader {
    std::shared_ptr<LoaderPosition> position;  // shared by the loader's copies
    int64_t batch_size;
    int64_t dataset_size;  // -1: a stream
    bool split_batches;    // a batch is split across the processes (its position counts global batches)
    bool gone() const { return position.use_count() == 1; }
  };
  struct RegisteredObject {
    std::function<void(torch::serialize::OutputArchive&)> save;
    std::function<void(torch::serialize::InputArchive&)> load;
  };
  // Everything a load reads, before it changes anything.
  struct Loaded {
    CheckpointMetadata metadata;
    std::vector<std::map<std::string, at::Tensor>> models;
    std::vector<torch::serialize::InputArchive> optimizers, objects;
    std::vector<int64_t> scheduler_steps;
    std::vector<torch::serialize::InputArchive> schedulers;  // whole states, for optim::WarmupSchedule
    std::optional<GradScaler::State> scaler;
    std::optional<RngState> rng;  // none for a process the checkpoint's job did not have
    std::map<std::string, at::Tensor> gradients;
    std::string copied_optimizer_state;  // dealt out: what every rank must have copied alike
  };

  // Forgets the prepared objects that are gone, so that a save never reads one.
  void forget_gone();
  // Absolute, normalized, without a trailing separator: "ckpt/" and "./ckpt" are one directory.
  static std::filesystem::path directory_path(const std::filesystem::path& dir);
  // Runs this process's part, then tells every process whether all parts succeeded: a failure on
  // any process is thrown on all of them (after on_failure), with its message and its kind (a
  // DamagedCheckpoint stays one). Returns every process's result.
  std::vector<std::string> together(const std::string& what, const std::function<std::string()>& part,
                                    const std::function<void()>& on_failure = {});

  CheckpointContext subject_;
  std::vector<TrackedModel> models_;

 private:
  template <class T>
  Registration track(std::vector<Tracked<T>>& tracked, T& object) {
    forget_gone();
    for (const auto& t : tracked)
      if (t.object == &object) return t.registration.lock();
    Registration registration = std::make_shared<const bool>(true);
    tracked.push_back({&object, registration});
    return registration;
  }

  // Where this process goes on with a loader whose processes had `saved` (epoch, batches) each: as
  // saved with as many processes; saved by another number, the batches of the latest epoch that
  // all processes had together, dealt out again (rounded down: none is skipped, fewer than
  // world_size are read twice). Split batches are global batches: their count stays.
  static std::pair<int64_t, int64_t> resumed_position(const std::vector<std::pair<int64_t, int64_t>>& saved,
                                                      int world_size, int rank, bool split_batches);
  static std::string numbered(const std::string& stem, std::size_t i, const std::string& extension) {
    return i == 0 ? stem + extension : stem + "_" + std::to_string(i) + extension;
  }
  // A sharding strategy's optimizers hold each rank's shards: every rank keeps its own file.
  std::string optimizer_file(const std::string& name, int rank) const;
  static std::string custom_file(std::size_t i) { return "custom_checkpoint_" + std::to_string(i) + ".bin"; }
  static std::string random_states_file(int rank) { return "random_states_" + std::to_string(rank) + ".bin"; }
  static std::string gradients_file(int rank) { return "gradients_" + std::to_string(rank) + ".safetensors"; }
  // The gradients of model i's parameters are saved under "model.<name>", "model_1.<name>", ...
  static std::string gradient_key(std::size_t i, const std::string& parameter) {
    return numbered("model", i, ".") + parameter;
  }

  // Between the synchronizing steps of gradient accumulation the gradients hold micro-batches
  // already done, which a resumed run needs; at a synchronizing step they are spent.
  bool mid_cycle() const { return subject_.training.micro_step % subject_.gradient_accumulation_steps != 0; }

  std::vector<std::pair<std::string, at::Tensor>> local_gradients() const;
  // Gives every parameter the saved gradient, or none where none was saved.
  void restore_gradients(const std::map<std::string, at::Tensor>& saved);
  std::filesystem::path load_from(const std::filesystem::path& source, GradScaler* scaler);
  // The main process holds project_dir's lock from its first automatic save or load on, so that a
  // second job on the same project_dir fails instead of overwriting and pruning this one's
  // checkpoints. Every process learns of a failure.
  void lock_project(const char* call);
  // total_limit: removes the oldest checkpoints beyond the limit, once the one just saved reads back
  // as it was written, so that the newest intact checkpoint is never removed.
  static void remove_oldest(const ProjectConfiguration& project, const std::filesystem::path& saved);
  CheckpointMetadata describe(const std::vector<std::vector<int64_t>>& positions, bool with_scaler) const;
  // Reads and checks everything this process needs from the checkpoint; changes nothing.
  Loaded read(const std::filesystem::path& source, bool with_scaler);
  void apply(const std::filesystem::path& source, Loaded& loaded, GradScaler* scaler);

  detail::FileLock project_lock_;  // the main process's, with automatic naming
  std::vector<Tracked<torch::optim::Optimizer>> optimizers_;
  std::vector<Tracked<torch::optim::LRScheduler>> schedulers_;
  std::vector<TrackedLoader> loaders_;
  std::vector<RegisteredObject> objects_;
};

}  // namespace detail

// The Accelerator's checkpointer: the core, plus what depends on the strategy and the module types
// (full states, gathered by a sharding strategy).
template <class Strategy>
class Checkpointer : public detail::CheckpointerCore {
 public:
  // The strategy makes the models' full states and carries the collectives.
  Checkpointer(Strategy& strategy, const CheckpointSubject& subject)
      : CheckpointerCore(
            {subject, Strategy::name, Strategy::checkpoint_layout, holds_part_of_model(strategy),
             sharded_checkpoints(strategy), detail::tensor_parallel_size(strategy),
             [&strategy](const std::string& bytes) { return ops::gather_object(strategy.comm(), bytes); },
             [&strategy](const std::string& bytes) { return ops::broadcast_object(strategy.comm(), bytes); },
             optimizer_shards(strategy)}),
        strategy_(strategy) {}

  void track_model(const std::shared_ptr<torch::nn::Module>& module) {
    forget_gone();
    const std::weak_ptr<torch::nn::Module> weak = module;
    const auto held = [weak] { return weak.lock(); };  // alive: forget_gone() runs first
    TrackedModel tracked{
        weak,
        [this, held] { return strategy_.full_state(*held()); },
        [this, held](const std::map<std::string, at::Tensor>& state) { strategy_.load_full_state(*held(), state); },
        [held] {
          std::vector<std::pair<std::string, at::Tensor>> parameters;
          for (const auto& p : held()->named_parameters()) parameters.emplace_back(p.key(), p.value());
          return parameters;
        },
        {},
        {}};
    if constexpr (detail::has_sharded_checkpoints<Strategy>::value) {
      tracked.sharded_state = [this, held] { return sharded_state_of(*held()); };
      tracked.load_sharded_state = [this, held](const std::map<std::string, at::Tensor>& state) {
        load_sharded_state_into(*held(), state);
      };
    }
    for (auto& model : models_)
      if (model.module.lock() == module) {
        model = std::move(tracked);
        return;
      }
    models_.push_back(std::move(tracked));
  }

  // --- save_model / load_model: the weights alone, for inference or another program, as Python's
  // save_model writes them: dir/model.safetensors, or, when the state is larger than
  // max_shard_size, model-00001-of-0000N.safetensors ... and model.safetensors.index.json (see
  // checkpoint/weight_shards.hpp). Files of an earlier save there with another layout are removed.
  void save_model(const torch::nn::Module& module, const std::filesystem::path& dir, const ShardSize& max_shard_size) {
    auto state = strategy_.full_state(module);
    const auto directory = directory_path(dir);
    together("save_model('" + directory.string() + "') failed", [&] {
      if (subject_.environment.is_main_process()) save_model_files(state, directory, max_shard_size);
      return std::string();
    });
  }

  // `path` is a safetensors file, or a directory holding model.safetensors or
  // model.safetensors.index.json (read one shard file at a time where the strategy allows it).
  void load_model(torch::nn::Module& module, const std::filesystem::path& path) {
    std::vector<std::filesystem::path> files;
    together("load_model('" + path.string() + "') failed", [&] {
      files = weights::model_files(path);
      return std::string();
    });
    if (holds_part_of_model(strategy_)) {
      // Each rank takes its shards or slices of the full state at once.
      std::map<std::string, at::Tensor> state;
      together("load_model('" + path.string() + "') failed", [&] {
        for (const auto& file : files) state.merge(safetensors::load_file(file).tensors);
        return std::string();
      });
      detail::read_from(path, [&] { strategy_.load_full_state(module, state); });
    } else {
      // Every entry is checked against the files' headers first; then the files are copied in one
      // at a time, so that the host holds one file's tensors.
      auto own = detail::module_state(module);
      together("load_model('" + path.string() + "') failed", [&] {
        std::map<std::string, at::Tensor> shapes;
        for (const auto& file : files) {
          const safetensors::File header(file);
          for (const auto& [name, info] : header.tensors())
            shapes.emplace(name, at::empty(info.shape, at::TensorOptions().device(at::kMeta).dtype(info.dtype)));
        }
        // Errors name the file, or the index of several.
        detail::read_from(files.size() == 1 ? files.front() : files.front().parent_path() / weights::kIndexFile,
                          [&] { detail::check_state_fits(own, shapes); });
        return std::string();
      });
      std::map<std::string, at::Tensor*> by_name;
      for (auto& [name, tensor] : own) by_name[name] = &tensor;
      at::NoGradGuard no_grad;
      for (const auto& file : files) {
        safetensors::Contents contents;
        together("load_model('" + file.string() + "') failed", [&] {
          contents = safetensors::load_file(file);
          return std::string();
        });
        detail::read_from(file, [&] {
          for (const auto& [name, tensor] : contents.tensors)
            if (const auto it = by_name.find(name); it != by_name.end()) it->second->copy_(tensor);
        });
      }
    }
  }

 private:
  // Whether each rank holds only its part of the model (its shards, or its tensor-parallel
  // slices), and so an optimizer state of its own.
  static bool holds_part_of_model(const Strategy& strategy) {
    return shards_model_v<Strategy> || detail::tensor_parallel_size(strategy) > 1;
  }
  static bool sharded_checkpoints(const Strategy& strategy) {
    if constexpr (detail::has_sharded_checkpoints<Strategy>::value)
      return strategy.sharded_checkpoints();
    else
      return false;
  }

  static std::function<std::vector<detail::OptimizerShard>()> optimizer_shards(Strategy& strategy) {
    if constexpr (shards_model_v<Strategy>) {
      return [&strategy] {
        const auto layouts = strategy.sharded_layout();
        const auto tensors = strategy.trained_parameters();  // one per unit, in the same order
        std::vector<detail::OptimizerShard> shards;
        for (std::size_t u = 0; u < layouts.size(); ++u) {
          const auto& l = layouts[u];
          shards.push_back({{l.name, l.numel, l.shard_numel, l.shards}, l.index, tensors[u]});
        }
        return shards;
      };
    } else {
      return [] { return std::vector<detail::OptimizerShard>(); };  // each rank's state is its parameters'
    }
  }

  ShardedModelState sharded_state_of(const torch::nn::Module& module) {
    ShardedModelState out;
    std::set<std::string> in_units;
    for (const auto& unit : strategy_.sharded_layout()) {
      ShardedStateLayout::Unit u{unit.name,   unit.name + ".flat_shard", safetensors::dtype_name(unit.dtype),
                                 unit.shards, unit.padded_numel,         unit.shard_numel,
                                 {}};
      for (const auto& m : unit.members) {
        u.members.push_back({m.name, m.shape, m.offset, m.numel});
        in_units.insert(m.name);
      }
      out.layout.units.push_back(std::move(u));
    }
    out.shards = strategy_.sharded_state();
    for (auto& [name, tensor] : detail::module_state(module)) {
      out.layout.order.push_back(name);
      if (in_units.count(name)) continue;
      out.layout.whole.push_back(name);
      out.whole.emplace_back(name, tensor);
    }
    return out;
  }

  void load_sharded_state_into(torch::nn::Module& module, const std::map<std::string, at::Tensor>& state) {
    std::set<std::string> in_units;
    for (const auto& unit : strategy_.sharded_layout())
      for (const auto& m : unit.members) in_units.insert(m.name);
    // The whole entries first checked, then everything changed.
    std::vector<std::pair<std::string, at::Tensor>> whole;
    std::map<std::string, at::Tensor> saved_whole;
    for (auto& entry : detail::module_state(module))
      if (!in_units.count(entry.first)) whole.push_back(entry);
    for (const auto& [name, tensor] : state)
      if (name.size() < 11 || name.compare(name.size() - 11, 11, ".flat_shard") != 0) saved_whole.emplace(name, tensor);
    detail::check_state_fits(whole, saved_whole);
    strategy_.load_sharded_state(state);
    at::NoGradGuard no_grad;
    for (auto& [name, tensor] : whole) tensor.copy_(saved_whole.at(name));
  }

  Strategy& strategy_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/checkpointer.ipp>
#endif
