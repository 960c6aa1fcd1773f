// What Accelerator::save_state writes and load_state reads: the objects prepare() tracked and
// those registered for checkpointing, in a directory laid out as Python Accelerate's:
//
//   model.safetensors, model_1.safetensors, ...   each prepared model's parameters and buffers,
//                                                  from the strategy's full_state (main process)
//   optimizer.bin, optimizer_1.bin, ...           each prepared optimizer (torch archive, main); with
//                                                 FSDP each rank's shards' state: optimizer_rank<r>.bin
//   scheduler.bin, scheduler_1.bin, ...           each prepared LR scheduler's step count (main)
//   scaler.pt                                     the GradScaler's scale and growth tracker (main)
//   custom_checkpoint_0.bin, ...                  each registered object's save() (main)
//   random_states_<rank>.bin                      every process's CPU and CUDA generators
//   gradients_<rank>.safetensors                  saved in the middle of a gradient accumulation
//                                                  cycle: every process's accumulated gradients
//   acc_state.json                                written last: world size, strategy, precision,
//                                                  every file's size and CRC-32C, the gradient
//                                                  accumulation step and every prepared loader's
//                                                  seed and position
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
#include <acc/checkpoint/project_configuration.hpp>
#include <acc/checkpoint/rng_state.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/config/environment.hpp>
#include <acc/data/dataloader.hpp>
#include <acc/detail/files.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/detail/torch_compat.hpp>
#include <acc/error.hpp>
#include <acc/ops/collectives.hpp>
#include <acc/precision/grad_scaler.hpp>
#include <acc/strategy/strategy.hpp>
#include <acc/version.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
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

// What a Checkpointer uses of the Accelerator that owns it (and outlives it).
template <class Strategy>
struct CheckpointSubject {
  Strategy& strategy;                     // the collectives, and the models' full states
  const ProcessEnvironment& environment;  // rank and world size
  const ProjectConfiguration& project;    // where numbered checkpoints go
  TrainingState& training;
  int64_t gradient_accumulation_steps;
  c10::Device device;          // where optimizer state is loaded
  std::string_view precision;  // the policies' names, recorded in acc_state.json
  std::string_view sampler;
};

template <class Strategy>
class Checkpointer {
 public:
  explicit Checkpointer(const CheckpointSubject<Strategy>& subject) : subject_(subject) {}
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // --- Called by prepare() and register_for_checkpointing. Prepared objects are tracked while
  // they live: a model while its module does, a data loader while a copy of it does, an optimizer
  // or scheduler while the handle returned here does (the prepared object holds it; the
  // checkpointer cannot see the object itself go). Preparing an object again tracks it once.
  using Registration = std::shared_ptr<const void>;

  template <class Holder>
  void track_model(const Holder& module) {
    using Module = typename Holder::ContainedType;
    forget_gone();
    const std::weak_ptr<Module> weak = module.ptr();
    const auto held = [weak] { return Holder(weak.lock()); };  // alive: forget_gone() runs first
    TrackedModel tracked{weak, [this, held] { return subject_.strategy.full_state(held()); },
                         [this, held](const std::map<std::string, at::Tensor>& state) {
                           auto module = held();
                           subject_.strategy.load_full_state(module, state);
                         },
                         [held] {
                           std::vector<std::pair<std::string, at::Tensor>> parameters;
                           for (const auto& p : held()->named_parameters()) parameters.emplace_back(p.key(), p.value());
                           return parameters;
                         }};
    for (auto& model : models_)
      if (model.module.lock() == module.ptr()) {
        model = std::move(tracked);
        return;
      }
    models_.push_back(std::move(tracked));
  }
  Registration track_optimizer(torch::optim::Optimizer& optimizer) { return track(optimizers_, optimizer); }
  Registration track_scheduler(torch::optim::LRScheduler& scheduler) { return track(schedulers_, scheduler); }
  void track_loader(const std::shared_ptr<LoaderPosition>& position, int64_t batch_size, int64_t dataset_size) {
    forget_gone();
    loaders_.push_back({position, batch_size, dataset_size});
  }
  // Accelerator::free_memory: no prepared object is saved or loaded any more (registered objects stay).
  void forget_prepared() {
    models_.clear();
    optimizers_.clear();
    schedulers_.clear();
    loaders_.clear();
  }
  template <class T>
  void register_object(T& object) {
    objects_.push_back({[&object](torch::serialize::OutputArchive& archive) { object.save(archive); },
                        [&object](torch::serialize::InputArchive& archive) { object.load(archive); }});
  }

  // --- save_state / load_state: an empty dir means automatic naming (see ProjectConfiguration).
  // With loss scaling, `scaler` is the Accelerator's GradScaler (nullptr without).
  std::filesystem::path save(const std::filesystem::path& dir, const GradScaler* scaler) {
    forget_gone();
    const auto& project = subject_.project;
    const bool automatic = dir.empty();
    if (automatic && !project.automatic_checkpoint_naming())
      throw Error(
          "save_state() needs a directory, or ProjectConfiguration().automatic_checkpoint_naming(true) in the "
          "Accelerator's options to number checkpoints under project_dir/checkpoints");
    const bool main = subject_.environment.is_main_process();
    const int rank = subject_.environment.rank;
    if (automatic) lock_project("save_state()");
    const std::filesystem::path target = ops::broadcast_object(
        comm(), main ? directory_path(automatic ? project.next_checkpoint() : dir).string() : std::string());
    const auto staging = detail::staging_path(target, ops::broadcast_object(comm(), static_cast<int64_t>(::getpid())));
    const std::string failed = "save_state('" + target.string() + "') failed and left what was there before";
    const auto discard = [&] {
      if (main) detail::remove_tree(staging);
    };
    const auto stage_done = [&](const char* stage) { detail::fail_save_at(stage, rank); };

    // Collective parts first: a sharding strategy gathers the weights; every rank's positions.
    std::vector<std::vector<std::pair<std::string, at::Tensor>>> model_states;
    for (auto& model : models_) model_states.push_back(model.full_state());
    std::vector<int64_t> mine;
    for (const auto& loader : loaders_) {
      mine.push_back(loader.position->epoch);
      mine.push_back(loader.position->batches);
    }
    const auto positions = ops::gather_object(comm(), mine);

    together(
        failed,
        [&] {
          if (main) {
            detail::remove_stale_staging(target);
            detail::remove_tree_or_throw(staging);
            std::filesystem::create_directories(staging);
            stage_done("directory");
          }
          return std::string();
        },
        discard);

    const auto written = together(
        failed,
        [&] {
          const bool gradients = mid_cycle();
          // The tensors this process writes, before it writes any: a disk without room for them fails
          // here, with the shortfall (optimizer state and small files come on top).
          uint64_t needed = 0;
          const auto add = [&](const auto& named) {
            for (const auto& [name, tensor] : named)
              needed += static_cast<uint64_t>(tensor.numel()) * tensor.element_size();
          };
          if (main)
            for (const auto& state : model_states) add(state);
          if (gradients) add(local_gradients());
          detail::require_free_space(detail::parent_directory(target), needed, "this process's part of the checkpoint");

          std::map<std::string, CheckpointFile> files;
          const auto path = [&](const std::string& name) { return staging / name; };
          const auto write_archive = [&](const std::string& name, torch::serialize::OutputArchive& archive) {
            files[name] = detail::save_archive(archive, path(name));
          };
          const auto write_tensors = [&](const std::string& name, const auto& tensors, const safetensors::Metadata& m) {
            const auto out = safetensors::save_file(tensors, path(name), m);
            files[name] = {out.size, out.crc32c};
          };
          if (main || kShardedOptimizer)
            for (std::size_t i = 0; i < optimizers_.size(); ++i) {
              torch::serialize::OutputArchive archive;
              detail::save_optimizer(*optimizers_[i].object, archive);
              write_archive(optimizer_file(numbered("optimizer", i, ".bin"), rank), archive);
              stage_done("optimizer");
            }
          if (main) {
            for (std::size_t i = 0; i < models_.size(); ++i) {
              write_tensors(numbered("model", i, ".safetensors"), model_states[i], {{"format", "pt"}});
              stage_done("model");
            }
            for (std::size_t i = 0; i < schedulers_.size(); ++i) {
              torch::serialize::OutputArchive archive;
              archive.write("step_count",
                            c10::IValue(static_cast<int64_t>(detail::SchedulerStepCount::of(*schedulers_[i].object))));
              write_archive(numbered("scheduler", i, ".bin"), archive);
              stage_done("scheduler");
            }
            if (scaler) {
              const auto state = scaler->state();
              torch::serialize::OutputArchive archive;
              archive.write("scale", c10::IValue(state.scale));
              archive.write("growth_tracker", c10::IValue(state.growth_tracker));
              write_archive(kScalerFile, archive);
              stage_done("scaler");
            }
            for (std::size_t i = 0; i < objects_.size(); ++i) {
              torch::serialize::OutputArchive archive;
              objects_[i].save(archive);
              write_archive(custom_file(i), archive);
              stage_done("custom");
            }
          }
          torch::serialize::OutputArchive archive;
          RngState::capture().save(archive);
          write_archive(random_states_file(rank), archive);
          stage_done("random_states");
          if (gradients) {
            write_tensors(gradients_file(rank), local_gradients(), {});
            stage_done("gradients");
          }
          return encode_file_records(files);
        },
        discard);

    together(
        failed,
        [&] {
          if (!main) return std::string();
          auto metadata = describe(positions, scaler != nullptr);
          for (const auto& part : written) metadata.files.merge(decode_file_records(part));
          detail::write_synced(staging / CheckpointMetadata::file_name, metadata.to_json());
          detail::fsync_path(staging);
          stage_done("metadata");
          detail::replace_directory(staging, target);
          stage_done("rename");
          if (automatic && project.total_limit() > 0) remove_oldest(project, target);
          return std::string();
        },
        discard);
    return target;
  }

  std::filesystem::path load(const std::filesystem::path& dir, GradScaler* scaler) {
    const auto& project = subject_.project;
    const bool automatic = dir.empty();
    if (automatic && !project.automatic_checkpoint_naming())
      throw Error(
          "load_state() needs a directory, or ProjectConfiguration().automatic_checkpoint_naming(true) to load the "
          "newest checkpoint under project_dir/checkpoints");
    forget_gone();
    if (!automatic) return load_from(directory_path(dir), scaler);
    // The newest checkpoint that is intact: a damaged one (a file missing or altered since the save)
    // is passed over, with a warning, for the one before it.
    lock_project("load_state()");
    auto candidates = project.checkpoints();
    std::string passed_over;
    for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
      try {
        return load_from(directory_path(*it), scaler);
      } catch (const DamagedCheckpoint& e) {
        if (subject_.environment.is_main_process())
          std::cerr << "acc: load_state() passes over " << it->string() << ", which is damaged: " << e.what() << "\n";
        passed_over += std::string("\n  ") + e.what();
      }
    }
    if (candidates.empty())
      throw Error("load_state() without a directory loads the newest checkpoint under '" +
                  project.checkpoints_dir().string() + "', but there is none");
    throw Error("load_state() found no intact checkpoint under '" + project.checkpoints_dir().string() +
                "'; each is damaged:" + passed_over);
  }

  // --- save_model / load_model: model.safetensors alone, for inference or another program.
  template <class Holder>
  void save_model(const Holder& module, const std::filesystem::path& dir) {
    auto state = subject_.strategy.full_state(module);
    const auto directory = directory_path(dir);
    together("save_model('" + directory.string() + "') failed", [&] {
      if (subject_.environment.is_main_process()) {
        std::filesystem::create_directories(directory);
        const auto file = directory / kModelFile;
        detail::remove_stale_staging(file);
        const auto staged = detail::staging_path(file, ::getpid());
        safetensors::save_file(state, staged, {{"format", "pt"}});
        std::filesystem::rename(staged, file);
        detail::fsync_path(directory);
      }
      return std::string();
    });
  }

  // `path` is a safetensors file or a directory holding model.safetensors.
  template <class Holder>
  void load_model(Holder& module, const std::filesystem::path& path) {
    std::error_code ec;
    const auto file = std::filesystem::is_directory(path, ec) ? path / kModelFile : path;
    safetensors::Contents contents;
    together("load_model('" + file.string() + "') failed", [&] {
      contents = safetensors::load_file(file);
      return std::string();
    });
    detail::read_from(file, [&] { subject_.strategy.load_full_state(module, contents.tensors); });
  }

 private:
  static constexpr const char* kModelFile = "model.safetensors";
  static constexpr const char* kScalerFile = "scaler.pt";

  struct TrackedModel {
    std::weak_ptr<torch::nn::Module> module;
    std::function<std::vector<std::pair<std::string, at::Tensor>>()> full_state;
    std::function<void(const std::map<std::string, at::Tensor>&)> load_full_state;
    std::function<std::vector<std::pair<std::string, at::Tensor>>()> parameters;  // this process's
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
    std::optional<GradScaler::State> scaler;
    RngState rng;
    std::map<std::string, at::Tensor> gradients;
  };

  template <class T>
  Registration track(std::vector<Tracked<T>>& tracked, T& object) {
    forget_gone();
    for (const auto& t : tracked)
      if (t.object == &object) return t.registration.lock();
    Registration registration = std::make_shared<const bool>(true);
    tracked.push_back({&object, registration});
    return registration;
  }

  // Forgets the prepared objects that are gone, so that a save never reads one.
  void forget_gone() {
    const auto forget = [](auto& tracked) {
      tracked.erase(std::remove_if(tracked.begin(), tracked.end(), [](const auto& t) { return t.gone(); }),
                    tracked.end());
    };
    forget(models_);
    forget(optimizers_);
    forget(schedulers_);
    forget(loaders_);
  }

  static std::string numbered(const std::string& stem, std::size_t i, const std::string& extension) {
    return i == 0 ? stem + extension : stem + "_" + std::to_string(i) + extension;
  }
  // A sharding strategy's optimizers hold each rank's shards: every rank keeps its own file.
  static constexpr bool kShardedOptimizer = shards_model_v<Strategy>;
  static std::string optimizer_file(const std::string& name, int rank) {
    if (!kShardedOptimizer) return name;
    const auto dot = name.rfind('.');
    return name.substr(0, dot) + "_rank" + std::to_string(rank) + name.substr(dot);
  }
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

  auto& comm() { return subject_.strategy.comm(); }

  std::vector<std::pair<std::string, at::Tensor>> local_gradients() const {
    std::vector<std::pair<std::string, at::Tensor>> gradients;
    for (std::size_t i = 0; i < models_.size(); ++i)
      for (const auto& [name, parameter] : models_[i].parameters())
        if (parameter.grad().defined()) gradients.emplace_back(gradient_key(i, name), parameter.grad());
    return gradients;
  }

  // Gives every parameter the saved gradient, or none where none was saved.
  void restore_gradients(const std::map<std::string, at::Tensor>& saved) {
    std::size_t used = 0;
    for (std::size_t i = 0; i < models_.size(); ++i)
      for (auto& [name, parameter] : models_[i].parameters()) {
        const auto it = saved.find(gradient_key(i, name));
        if (it == saved.end()) {
          parameter.mutable_grad().reset();
          continue;
        }
        if (it->second.sizes() != parameter.sizes())
          throw Error("the gradient of " + it->first + " is " + detail::shape_text(it->second) + " and the parameter " +
                      detail::shape_text(parameter));
        parameter.mutable_grad() = it->second.to(parameter.device(), parameter.scalar_type());
        ++used;
      }
    if (used != saved.size()) throw Error("it holds gradients of parameters these models do not have");
  }

  std::filesystem::path load_from(const std::filesystem::path& source, GradScaler* scaler) {
    Loaded loaded;
    together("load_state('" + source.string() + "') failed and changed nothing", [&] {
      loaded = read(source, scaler != nullptr);
      return std::string();
    });
    apply(source, loaded, scaler);
    return source;
  }

  // The main process holds project_dir's lock from its first automatic save or load on, so that a
  // second job on the same project_dir fails instead of overwriting and pruning this one's
  // checkpoints. Every process learns of a failure.
  void lock_project(const char* call) {
    const auto& project = subject_.project;
    together(std::string(call) + " failed", [&] {
      if (!subject_.environment.is_main_process()) return std::string();
      const auto file = directory_path(project.checkpoints_dir()) / ".lock";
      if (project_lock_.file() != file)
        project_lock_ =
            detail::FileLock::take(file, "project_dir '" + directory_path(project.project_dir()).string() + "'");
      return std::string();
    });
  }

  // total_limit: removes the oldest checkpoints beyond the limit, once the one just saved reads back
  // as it was written, so that the newest intact checkpoint is never removed.
  static void remove_oldest(const ProjectConfiguration& project, const std::filesystem::path& saved) {
    const auto existing = project.checkpoints();
    const auto limit = static_cast<std::size_t>(project.total_limit());
    if (existing.size() <= limit) return;
    if (const auto damage = detail::damage_of(saved); !damage.empty()) {
      detail::remove_tree(saved);
      throw Error(
          "the checkpoint just written does not read back as it was written, so it was removed and no older "
          "checkpoint was: " +
          damage);
    }
    for (std::size_t i = 0; i + limit < existing.size(); ++i) detail::remove_tree_or_throw(existing[i]);
  }

  // Absolute, normalized, without a trailing separator: "ckpt/" and "./ckpt" are one directory.
  static std::filesystem::path directory_path(const std::filesystem::path& dir) {
    auto path = std::filesystem::absolute(dir).lexically_normal();
    return path.has_filename() ? path : path.parent_path();
  }

  // Runs this process's part, then tells every process whether all parts succeeded: a failure on
  // any process is thrown on all of them (after on_failure), with its message and its kind (a
  // DamagedCheckpoint stays one). Returns every process's result.
  template <class Part>
  std::vector<std::string> together(const std::string& what, Part&& part,
                                    const std::function<void()>& on_failure = {}) {
    std::string outcome;
    try {
      outcome = "+" + part();
    } catch (const DamagedCheckpoint& e) {
      outcome = std::string("?") + e.what();
    } catch (const c10::Error& e) {
      outcome = std::string("!") + e.what_without_backtrace();
    } catch (const std::exception& e) {
      outcome = std::string("!") + e.what();
    }
    auto outcomes = ops::gather_object(comm(), outcome);
    for (std::size_t r = 0; r < outcomes.size(); ++r) {
      if (outcomes[r].empty() || outcomes[r][0] == '+') continue;
      if (on_failure) on_failure();
      const auto where = outcomes.size() > 1 ? " (on rank " + std::to_string(r) + ")" : std::string();
      const auto message = what + where + ": " + outcomes[r].substr(1);
      if (outcomes[r][0] == '?') throw DamagedCheckpoint(message);
      throw Error(message);
    }
    for (auto& o : outcomes) o.erase(0, 1);
    return outcomes;
  }

  CheckpointMetadata describe(const std::vector<std::vector<int64_t>>& positions, bool with_scaler) const {
    CheckpointMetadata m;
    m.library_version = std::string(version);
    m.torch_version = compat::torch_version;
    m.optimizer_format = compat::optimizer_archive_format;
    m.world_size = subject_.environment.world_size;
    m.strategy = std::string(Strategy::name);
    m.layout = std::string(Strategy::checkpoint_layout);
    m.precision = std::string(subject_.precision);
    m.sampler = std::string(subject_.sampler);
    m.step = subject_.training.micro_step;
    for (std::size_t i = 0; i < models_.size(); ++i) m.models.push_back(numbered("model", i, ".safetensors"));
    for (std::size_t i = 0; i < optimizers_.size(); ++i) m.optimizers.push_back(numbered("optimizer", i, ".bin"));
    for (std::size_t i = 0; i < schedulers_.size(); ++i) m.schedulers.push_back(numbered("scheduler", i, ".bin"));
    if (with_scaler) m.scaler = kScalerFile;
    for (std::size_t i = 0; i < objects_.size(); ++i) m.custom_objects.push_back(custom_file(i));
    for (int r = 0; r < subject_.environment.world_size; ++r) {
      m.random_states.push_back(random_states_file(r));
      if (mid_cycle()) m.gradients.push_back(gradients_file(r));
    }
    for (std::size_t i = 0; i < loaders_.size(); ++i) {
      CheckpointMetadata::DataLoader d;
      d.seed = loaders_[i].position->seed;
      d.batch_size = loaders_[i].batch_size;
      d.dataset_size = loaders_[i].dataset_size;
      for (const auto& rank : positions) d.positions.emplace_back(rank[2 * i], rank[2 * i + 1]);
      m.data_loaders.push_back(std::move(d));
    }
    return m;
  }

  // Reads and checks everything this process needs from the checkpoint; changes nothing.
  Loaded read(const std::filesystem::path& source, bool with_scaler) {
    const int world_size = subject_.environment.world_size;
    Loaded loaded;
    auto& m = loaded.metadata;
    m = CheckpointMetadata::read(source);
    const auto described = "'" + (source / CheckpointMetadata::file_name).string() + "'";
    const auto mismatch = [&](const std::string& problem) { throw Error(described + ": " + problem); };
    if (m.world_size != world_size)
      mismatch("the checkpoint was saved by " + std::to_string(m.world_size) + " processes, and this job has " +
               std::to_string(world_size) + "; resume with as many processes");
    if (const auto problem = m.strategy_mismatch(Strategy::name, Strategy::checkpoint_layout); !problem.empty())
      mismatch(problem);
    const auto count = [&](const char* what, std::size_t saved, std::size_t here, const char* how) {
      if (saved != here)
        mismatch("the checkpoint holds " + std::to_string(saved) + " " + what + " and " + std::to_string(here) +
                 " were " + how + " before load_state; " + how + " the same ones, in the same order");
    };
    count("models", m.models.size(), models_.size(), "prepared");
    count("optimizers", m.optimizers.size(), optimizers_.size(), "prepared");
    count("schedulers", m.schedulers.size(), schedulers_.size(), "prepared");
    count("data loaders", m.data_loaders.size(), loaders_.size(), "prepared");
    count("custom objects", m.custom_objects.size(), objects_.size(), "registered");
    if (!m.data_loaders.empty() && m.sampler != subject_.sampler)
      mismatch("its data positions are in the order of sampler " + m.sampler + ", and this Accelerator uses " +
               std::string(subject_.sampler));
    if (!m.optimizers.empty() && m.optimizer_format != compat::optimizer_archive_format)
      mismatch("its optimizer state was written by libtorch " + m.torch_version +
               ", whose optimizer archives this libtorch (" + compat::torch_version +
               ") cannot read: their parameter keys changed in 2.2");
    const auto rank = static_cast<std::size_t>(subject_.environment.rank);
    for (std::size_t i = 0; i < loaders_.size(); ++i) {
      const auto& d = m.data_loaders[i];
      const auto& here = loaders_[i];
      if (d.batch_size != here.batch_size || d.dataset_size != here.dataset_size)
        mismatch("data loader " + std::to_string(i) + " had batch_size " + std::to_string(d.batch_size) + " over " +
                 std::to_string(d.dataset_size) + " samples, and the one prepared here has batch_size " +
                 std::to_string(here.batch_size) + " over " + std::to_string(here.dataset_size));
    }

    // A file the manifest lists, present, with its record (checked against its bytes as they are read).
    using Needed = std::pair<std::filesystem::path, CheckpointFile>;
    const auto need = [&](const std::string& name) -> Needed {
      const auto file = source / name;
      const auto recorded = m.files.find(name);
      if (recorded == m.files.end())
        throw DamagedCheckpoint(described + ": it lists " + name + " but has no record of it under \"files\"");
      std::error_code ec;
      if (!std::filesystem::is_regular_file(file, ec))
        throw DamagedCheckpoint("'" + file.string() + "' is missing (" + described + " lists it)");
      const auto size = std::filesystem::file_size(file, ec);
      if (size != recorded->second.size)
        throw DamagedCheckpoint("'" + file.string() + "' is " + std::to_string(size) + " bytes but was saved with " +
                                std::to_string(recorded->second.size) + " (truncated or overwritten)");
      return {file, recorded->second};
    };
    const auto tensors = [&](const Needed& needed) {
      const auto& [file, recorded] = needed;
      safetensors::Contents contents;
      try {
        contents = safetensors::load_file(file);
      } catch (const Error& e) {
        throw DamagedCheckpoint(e.what());
      }
      std::error_code ec;
      detail::check_recorded(file, recorded, std::filesystem::file_size(file, ec), contents.crc32c);
      return std::move(contents.tensors);
    };
    const auto archive_of = [&](const Needed& needed, std::optional<c10::Device> device = std::nullopt) {
      return detail::load_archive(needed.first, needed.second, device);
    };
    for (const auto& name : m.models) loaded.models.push_back(tensors(need(name)));
    for (const auto& name : m.optimizers)
      loaded.optimizers.push_back(archive_of(need(optimizer_file(name, static_cast<int>(rank))), subject_.device));
    for (const auto& name : m.schedulers) {
      const auto needed = need(name);
      const auto& file = needed.first;
      auto archive = archive_of(needed);
      detail::read_from(file, [&] {
        c10::IValue steps;
        archive.read("step_count", steps);
        if (steps.toInt() < 0) throw Error("a negative step count");
        loaded.scheduler_steps.push_back(steps.toInt());
      });
    }
    if (m.scaler && with_scaler) {
      const auto needed = need(*m.scaler);
      const auto& file = needed.first;
      auto archive = archive_of(needed);
      detail::read_from(file, [&] {
        c10::IValue scale, growth_tracker;
        archive.read("scale", scale);
        archive.read("growth_tracker", growth_tracker);
        loaded.scaler = GradScaler::State{scale.toDouble(), growth_tracker.toInt()};
      });
    }
    for (const auto& name : m.custom_objects) loaded.objects.push_back(archive_of(need(name)));
    const auto rng = need(m.random_states[rank]);
    auto rng_archive = archive_of(rng);
    detail::read_from(rng.first, [&] { loaded.rng.load(rng_archive); });
    if (!m.gradients.empty()) loaded.gradients = tensors(need(m.gradients[rank]));
    return loaded;
  }

  void apply(const std::filesystem::path& source, Loaded& loaded, GradScaler* scaler) {
    const auto& m = loaded.metadata;
    for (std::size_t i = 0; i < models_.size(); ++i)
      detail::read_from(source / m.models[i], [&] { models_[i].load_full_state(loaded.models[i]); });
    for (std::size_t i = 0; i < optimizers_.size(); ++i)
      detail::read_from(source / optimizer_file(m.optimizers[i], subject_.environment.rank),
                        [&] { detail::load_optimizer(*optimizers_[i].object, loaded.optimizers[i]); });
    for (std::size_t i = 0; i < schedulers_.size(); ++i)
      detail::SchedulerStepCount::of(*schedulers_[i].object) =
          static_cast<std::decay_t<decltype(detail::SchedulerStepCount::of(*schedulers_[i].object))>>(
              loaded.scheduler_steps[i]);
    if (scaler && loaded.scaler) scaler->load(*loaded.scaler);
    for (std::size_t i = 0; i < objects_.size(); ++i)
      detail::read_from(source / m.custom_objects[i], [&] { objects_[i].load(loaded.objects[i]); });
    const auto rank = static_cast<std::size_t>(subject_.environment.rank);
    for (std::size_t i = 0; i < loaders_.size(); ++i) {
      const auto& d = m.data_loaders[i];
      *loaders_[i].position = {d.seed, d.positions[rank].first, d.positions[rank].second, true};
    }
    if (!m.gradients.empty())
      detail::read_from(source / m.gradients[rank], [&] { restore_gradients(loaded.gradients); });
    subject_.training.micro_step = m.step;
    if (m.precision != subject_.precision && subject_.environment.is_main_process())
      std::cerr << "acc: " << source.string() << " was saved with mixed precision " << m.precision
                << " and is loaded with " << subject_.precision << "; the loss scaler is "
                << (loaded.scaler ? "restored" : "left as it is") << "\n";
    loaded.rng.restore();
  }

  CheckpointSubject<Strategy> subject_;
  detail::FileLock project_lock_;  // the main process's, with automatic naming
  std::vector<TrackedModel> models_;
  std::vector<Tracked<torch::optim::Optimizer>> optimizers_;
  std::vector<Tracked<torch::optim::LRScheduler>> schedulers_;
  std::vector<TrackedLoader> loaders_;
  std::vector<RegisteredObject> objects_;
};

}  // namespace acc
