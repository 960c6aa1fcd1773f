// The bodies of the checkpointer's non-template core (see checkpoint/checkpointer.hpp).
#pragma once

#include <acc/checkpoint/checkpointer.hpp>
#include <acc/checkpoint/impl/safetensors.ipp>
#include <acc/optim/schedules.hpp>

namespace acc::detail {

ACC_DECL void CheckpointerCore::track_loader(const std::shared_ptr<LoaderPosition>& position, int64_t batch_size,
                                             int64_t dataset_size, bool split_batches) {
  forget_gone();
  loaders_.push_back({position, batch_size, dataset_size, split_batches});
}

ACC_DECL void CheckpointerCore::forget_prepared() {
  models_.clear();
  optimizers_.clear();
  schedulers_.clear();
  loaders_.clear();
}

ACC_DECL std::filesystem::path CheckpointerCore::save(const std::filesystem::path& dir, const GradScaler* scaler) {
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
  const std::filesystem::path target =
      subject_.broadcast(main ? directory_path(automatic ? project.next_checkpoint() : dir).string() : std::string());
  const auto staging = detail::staging_path(target, std::stoll(subject_.broadcast(std::to_string(::getpid()))));
  const std::string failed = "save_state('" + target.string() + "') failed and left what was there before";
  const auto discard = [&] {
    if (main) detail::remove_tree(staging);
  };
  const auto stage_done = [&](const char* stage) { detail::fail_save_at(stage, rank); };

  // Collective parts first: a sharding strategy gathers the weights (unless each rank writes its
  // own shards); every rank's positions.
  const bool sharded = subject_.sharded_model;
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> model_states;
  std::vector<ShardedModelState> sharded_states;
  for (auto& model : models_) {
    if (sharded)
      sharded_states.push_back(model.sharded_state());
    else
      model_states.push_back(model.full_state());
  }
  std::vector<int64_t> mine;
  for (const auto& loader : loaders_) {
    mine.push_back(loader.position->epoch);
    mine.push_back(loader.position->batches);
  }
  std::string my_positions;
  ops::detail::write_bytes(my_positions, mine);
  std::vector<std::vector<int64_t>> positions;
  for (const auto& bytes : subject_.gather(my_positions)) {
    std::size_t at = 0;
    positions.push_back(ops::detail::read_bytes<std::vector<int64_t>>(bytes, at));
  }

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
        for (const auto& state : sharded_states) {
          add(state.shards);
          if (main) add(state.whole);
        }
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
        if (main || subject_.sharded_optimizer)
          for (std::size_t i = 0; i < optimizers_.size(); ++i) {
            torch::serialize::OutputArchive archive;
            detail::save_optimizer(*optimizers_[i].object, archive);
            write_archive(optimizer_file(numbered("optimizer", i, ".bin"), rank), archive);
            stage_done("optimizer");
          }
        // SHARDED_STATE_DICT: every rank its shards and their layout, rank 0 the whole entries too.
        for (std::size_t i = 0; i < sharded_states.size(); ++i) {
          auto& state = sharded_states[i];
          state.layout.world_size = subject_.environment.world_size;
          state.layout.rank = rank;
          auto tensors = state.shards;
          if (main) tensors.insert(tensors.end(), state.whole.begin(), state.whole.end());
          write_tensors(sharded_state_file(i, rank), tensors,
                        {{"format", "pt"}, {ShardedStateLayout::metadata_key, state.layout.to_json()}});
          stage_done("model");
        }
        if (main) {
          for (std::size_t i = 0; i < model_states.size(); ++i) {
            write_tensors(numbered("model", i, ".safetensors"), model_states[i], {{"format", "pt"}});
            stage_done("model");
          }
          for (std::size_t i = 0; i < schedulers_.size(); ++i) {
            torch::serialize::OutputArchive archive;
            // A schedule that keeps more than its step count writes its whole state (with the same
            // "step_count"); libtorch's own schedulers have only the count to keep.
            if (const auto* schedule = dynamic_cast<const optim::WarmupSchedule*>(schedulers_[i].object))
              schedule->save(archive);
            else
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

ACC_DECL std::filesystem::path CheckpointerCore::load(const std::filesystem::path& dir, GradScaler* scaler) {
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

ACC_DECL void CheckpointerCore::forget_gone() {
  const auto forget = [](auto& tracked) {
    tracked.erase(std::remove_if(tracked.begin(), tracked.end(), [](const auto& t) { return t.gone(); }),
                  tracked.end());
  };
  forget(models_);
  forget(optimizers_);
  forget(schedulers_);
  forget(loaders_);
}

ACC_DECL std::pair<int64_t, int64_t> CheckpointerCore::resumed_position(
    const std::vector<std::pair<int64_t, int64_t>>& saved, int world_size, int rank, bool split_batches) {
  if (static_cast<int>(saved.size()) == world_size) return saved[static_cast<std::size_t>(rank)];
  const int64_t epoch = std::max_element(saved.begin(), saved.end())->first;
  int64_t batches = 0;
  for (const auto& [saved_epoch, saved_batches] : saved)
    if (saved_epoch == epoch) batches = split_batches ? std::max(batches, saved_batches) : batches + saved_batches;
  return {epoch, split_batches ? batches : batches / world_size};
}

ACC_DECL std::string CheckpointerCore::optimizer_file(const std::string& name, int rank) const {
  if (!subject_.sharded_optimizer) return name;
  const auto dot = name.rfind('.');
  return name.substr(0, dot) + "_rank" + std::to_string(rank) + name.substr(dot);
}

ACC_DECL std::vector<std::pair<std::string, at::Tensor>> CheckpointerCore::local_gradients() const {
  std::vector<std::pair<std::string, at::Tensor>> gradients;
  for (std::size_t i = 0; i < models_.size(); ++i)
    for (const auto& [name, parameter] : models_[i].parameters())
      if (parameter.grad().defined()) gradients.emplace_back(gradient_key(i, name), parameter.grad());
  return gradients;
}

ACC_DECL void CheckpointerCore::restore_gradients(const std::map<std::string, at::Tensor>& saved) {
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

ACC_DECL std::filesystem::path CheckpointerCore::load_from(const std::filesystem::path& source, GradScaler* scaler) {
  Loaded loaded;
  const auto failed = "load_state('" + source.string() + "') failed and changed nothing";
  const auto copied = together(failed, [&] {
    loaded = read(source, scaler != nullptr);
    return loaded.copied_optimizer_state;
  });
  // Every rank compared the saved files it read; this compares what they read with each other.
  for (std::size_t r = 1; r < copied.size(); ++r)
    if (copied[r] != copied[0])
      throw Error(failed + ": '" + (source / CheckpointMetadata::file_name).string() +
                  "': the optimizer state that is the same on every saving rank (as AdamW's step count) differs "
                  "between the saved files that rank 0 and rank " +
                  std::to_string(r) + " of this job read:\n" + copied[0] + "against\n" + copied[r]);
  apply(source, loaded, scaler);
  return source;
}

ACC_DECL void CheckpointerCore::lock_project(const char* call) {
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

ACC_DECL void CheckpointerCore::remove_oldest(const ProjectConfiguration& project, const std::filesystem::path& saved) {
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

ACC_DECL std::filesystem::path CheckpointerCore::directory_path(const std::filesystem::path& dir) {
  auto path = std::filesystem::absolute(dir).lexically_normal();
  return path.has_filename() ? path : path.parent_path();
}

ACC_DECL std::vector<std::string> CheckpointerCore::together(const std::string& what,
                                                             const std::function<std::string()>& part,
                                                             const std::function<void()>& on_failure) {
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
  auto outcomes = subject_.gather(outcome);
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

ACC_DECL CheckpointMetadata CheckpointerCore::describe(const std::vector<std::vector<int64_t>>& positions,
                                                       bool with_scaler) const {
  CheckpointMetadata m;
  m.library_version = std::string(version);
  m.torch_version = compat::torch_version;
  m.optimizer_format = compat::optimizer_archive_format;
  m.world_size = subject_.environment.world_size;
  m.tp_size = subject_.tensor_parallel_size;
  m.strategy = std::string(subject_.strategy);
  m.layout = std::string(subject_.layout);
  m.precision = std::string(subject_.precision);
  m.sampler = std::string(subject_.sampler);
  m.step = subject_.training.micro_step;
  for (std::size_t i = 0; i < models_.size(); ++i) m.models.push_back(numbered("model", i, ".safetensors"));
  if (subject_.sharded_model) m.state_dict_type = "SHARDED_STATE_DICT";
  if (subject_.sharded_optimizer) m.flat_units = units_of(subject_.optimizer_shards());
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

// Beside tensor parallelism without sharding (DDP), each rank's optimizer state is that of its tp
// slices, the same on every data-parallel replica; FSDP shards it over the replicas too.
ACC_DECL bool replicated_slices(const CheckpointContext& context) {
  return context.tensor_parallel_size > 1 && context.optimizer_shards().empty();
}

// Whose optimizer file a rank reads: its own; with replicated slices on another number of
// processes, that of the first replica's rank at its tp position (ranks are laid out tp innermost).
ACC_DECL int saved_optimizer_rank(const CheckpointContext& context, int saved_world_size) {
  const int rank = context.environment.rank;
  return replicated_slices(context) && saved_world_size != context.environment.world_size
             ? rank % context.tensor_parallel_size
             : rank;
}

ACC_DECL CheckpointerCore::Loaded CheckpointerCore::read(const std::filesystem::path& source, bool with_scaler) {
  const int world_size = subject_.environment.world_size;
  Loaded loaded;
  auto& m = loaded.metadata;
  m = CheckpointMetadata::read(source);
  const auto described = "'" + (source / CheckpointMetadata::file_name).string() + "'";
  const auto mismatch = [&](const std::string& problem) { throw Error(described + ": " + problem); };
  // Tensor parallelism: each rank's optimizer file holds the state of its own slices, which only
  // the same tp group size cuts the same way. Another number of data-parallel replicas reads them
  // again when each replica holds the same (DDP); FSDP's shards of them are not dealt out again.
  const int tp_size = subject_.tensor_parallel_size;
  if (m.tp_size != tp_size)
    mismatch("the checkpoint was saved with tensor-parallel groups of " + std::to_string(m.tp_size) +
             " ranks, and this job's are " + std::to_string(tp_size) +
             "; resume with the same parallelism_config_tp_size, or load its full weights (save_model) into the "
             "model before acc::tp::parallelize");
  const bool replicated = replicated_slices(subject_);
  if (tp_size > 1 && !replicated && m.world_size != world_size)
    mismatch("the checkpoint was saved by " + std::to_string(m.world_size) + " processes, and this job has " +
             std::to_string(world_size) + "; with FSDP beside tensor parallelism each rank's files hold its shards " +
             "of its own slices: resume with " + std::to_string(m.world_size) +
             " processes, or load its full weights (save_model) into the model before acc::tp::parallelize");
  // Another number of processes (Python allows it): the model, optimizer and scheduler states are
  // whole, or dealt out again (a sharding strategy's optimizer state, below), and so are the
  // loaders' positions in apply(). Not so for the model's shards and gradients, which are per process.
  if (m.world_size != world_size) {
    const auto saved_by = "the checkpoint was saved by " + std::to_string(m.world_size) +
                          " processes, and this job has " + std::to_string(world_size);
    if (m.state_dict_type == "SHARDED_STATE_DICT")
      mismatch(saved_by +
               ", with fsdp_state_dict_type SHARDED_STATE_DICT: each process's file holds its shards "
               "of the model; resume with " +
               std::to_string(m.world_size) +
               " processes, or merge the shards into full weights with `acc merge-weights " + source.string() +
               " OUTPUT_DIR` (then load_model), or save with FULL_STATE_DICT, which loads on any number");
    if (subject_.sharded_optimizer && !replicated && !m.optimizers.empty() && m.flat_units.empty())
      mismatch(saved_by + ", whose optimizer state is sharded by rank (" + std::string(subject_.strategy) +
               ") and which does not record how (saved by an older accelerate-cpp); resume with " +
               std::to_string(m.world_size) + " processes");
    if (!m.gradients.empty())
      mismatch(saved_by +
               " in the middle of a gradient accumulation cycle, whose gradients are each process's "
               "own; resume with " +
               std::to_string(m.world_size) + " processes, or from a checkpoint saved after an optimizer step");
  }
  // Shards only FSDP loads: another strategy gets the way to full weights rather than the layouts.
  if (m.state_dict_type == "SHARDED_STATE_DICT")
    for (const auto& model : models_)
      if (!model.load_sharded_state)
        mismatch(
            "its models are saved as each process's FSDP shards (fsdp_state_dict_type SHARDED_STATE_DICT), "
            "which only FSDP loads; merge them into full weights with `acc merge-weights " +
            source.string() + " OUTPUT_DIR` and load those with load_model");
  if (const auto problem = m.strategy_mismatch(subject_.strategy, subject_.layout); !problem.empty()) mismatch(problem);
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
  if (m.state_dict_type == "SHARDED_STATE_DICT") {
    for (std::size_t i = 0; i < m.models.size(); ++i) {
      // This rank's file whole (its CRC checked as it is read); rank 0's whole entries.
      auto state = tensors(need(sharded_state_file(i, static_cast<int64_t>(rank))));
      if (rank != 0) {
        const auto first = need(sharded_state_file(i, 0));
        try {
          const safetensors::File file(first.first);
          const auto layout = ShardedStateLayout::from_json(file.metadata().count(ShardedStateLayout::metadata_key)
                                                                ? file.metadata().at(ShardedStateLayout::metadata_key)
                                                                : std::string(),
                                                            "'" + first.first.string() + "'");
          for (const auto& name : layout.whole) state[name] = file.read(name);
        } catch (const DamagedCheckpoint&) {
          throw;
        } catch (const Error& e) {
          throw DamagedCheckpoint(e.what());
        }
      }
      loaded.models.push_back(std::move(state));
    }
  } else {
    for (const auto& name : m.models) loaded.models.push_back(tensors(need(name)));
  }
  // Each rank's optimizer state of its shards, split as this job splits the units: dealt out again
  // from the saved ranks' files when the checkpoint split them otherwise (another number of
  // processes, or of ranks per hybrid shard group).
  const auto shards = subject_.sharded_optimizer ? subject_.optimizer_shards() : std::vector<OptimizerShard>();
  const bool deal = subject_.sharded_optimizer && !replicated &&
                    (m.world_size != world_size || (!m.flat_units.empty() && m.flat_units != units_of(shards)));
  for (std::size_t i = 0; i < m.optimizers.size(); ++i) {
    const auto& name = m.optimizers[i];
    if (!deal) {
      const auto needed = need(optimizer_file(name, saved_optimizer_rank(subject_, m.world_size)));
      loaded.optimizers.push_back(archive_of(needed, subject_.device));
      detail::read_from(needed.first,
                        [&] { detail::check_optimizer_fits(*optimizers_[i].object, loaded.optimizers.back()); });
      continue;
    }
    try {
      auto dealt = deal_optimizer_state(m.flat_units, shards, *optimizers_[i].object, [&](int64_t saved_rank) {
        return archive_of(need(optimizer_file(name, static_cast<int>(saved_rank))), c10::Device(c10::kCPU));
      });
      loaded.optimizers.push_back(std::move(dealt.archive));
      loaded.copied_optimizer_state += name + ":\n" + dealt.copied;
    } catch (const DamagedCheckpoint&) {
      throw;
    } catch (const Error& e) {
      mismatch("the state of " + name + ", one file per rank of the " + std::to_string(m.world_size) +
               " that saved it, does not deal out to this job's " + std::to_string(world_size) + ": " + e.what());
    }
  }
  for (std::size_t i = 0; i < m.schedulers.size(); ++i) {  // as many as schedulers_ (counted above)
    const auto needed = need(m.schedulers[i]);
    const auto& file = needed.first;
    auto archive = archive_of(needed);
    detail::read_from(file, [&] {
      c10::IValue steps;
      archive.read("step_count", steps);
      if (steps.toInt() < 0) throw Error("a negative step count");
      loaded.scheduler_steps.push_back(steps.toInt());
      // Another kind of schedule or other parameters: an error now, before anything changes.
      if (const auto* schedule = dynamic_cast<const optim::WarmupSchedule*>(schedulers_[i].object))
        schedule->check(archive);
    });
    loaded.schedulers.push_back(std::move(archive));
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
  if (rank < m.random_states.size()) {
    const auto rng = need(m.random_states[rank]);
    auto rng_archive = archive_of(rng);
    loaded.rng.emplace();
    detail::read_from(rng.first, [&] { loaded.rng->load(rng_archive); });
  }
  if (!m.gradients.empty()) loaded.gradients = tensors(need(m.gradients[rank]));
  return loaded;
}

ACC_DECL void CheckpointerCore::apply(const std::filesystem::path& source, Loaded& loaded, GradScaler* scaler) {
  const auto& m = loaded.metadata;
  for (std::size_t i = 0; i < models_.size(); ++i) {
    if (m.state_dict_type == "SHARDED_STATE_DICT")
      detail::read_from(source / sharded_state_file(i, subject_.environment.rank),
                        [&] { models_[i].load_sharded_state(loaded.models[i]); });
    else
      detail::read_from(source / m.models[i], [&] { models_[i].load_full_state(loaded.models[i]); });
  }
  for (std::size_t i = 0; i < optimizers_.size(); ++i)
    detail::read_from(source / optimizer_file(m.optimizers[i], saved_optimizer_rank(subject_, m.world_size)),
                      [&] { detail::load_optimizer(*optimizers_[i].object, loaded.optimizers[i]); });
  for (std::size_t i = 0; i < schedulers_.size(); ++i) {
    if (auto* schedule = dynamic_cast<optim::WarmupSchedule*>(schedulers_[i].object))
      detail::read_from(source / m.schedulers[i], [&] { schedule->load(loaded.schedulers[i]); });
    else
      detail::SchedulerStepCount::of(*schedulers_[i].object) =
          static_cast<std::decay_t<decltype(detail::SchedulerStepCount::of(*schedulers_[i].object))>>(
              loaded.scheduler_steps[i]);
  }
  if (scaler && loaded.scaler) scaler->load(*loaded.scaler);
  for (std::size_t i = 0; i < objects_.size(); ++i)
    detail::read_from(source / m.custom_objects[i], [&] { objects_[i].load(loaded.objects[i]); });
  const auto& environment = subject_.environment;
  const auto rank = static_cast<std::size_t>(environment.rank);
  // Beside tensor parallelism the ranks of a tp group hold the same positions: summed over every
  // rank and divided by the world, each group's still counts once.
  for (std::size_t i = 0; i < loaders_.size(); ++i) {
    const auto& d = m.data_loaders[i];
    const auto [epoch, batches] =
        resumed_position(d.positions, environment.world_size, environment.rank, loaders_[i].split_batches);
    *loaders_[i].position = {d.seed, epoch, batches, true};
    if (m.world_size != environment.world_size && environment.is_main_process())
      std::cerr << "acc: " << source.string() << " was saved by " << m.world_size
                << (m.world_size == 1 ? " process" : " processes") << " and is loaded by " << environment.world_size
                << ": data loader " << i << " goes on in epoch " << epoch << " after batch " << batches
                << " of each process\n";
  }
  if (!m.gradients.empty()) detail::read_from(source / m.gradients[rank], [&] { restore_gradients(loaded.gradients); });
  subject_.training.micro_step = m.step;
  if (m.precision != subject_.precision && subject_.environment.is_main_process())
    std::cerr << "acc: " << source.string() << " was saved with mixed precision " << m.precision
              << " and is loaded with " << subject_.precision << "; the loss scaler is "
              << (loaded.scaler ? "restored" : "left as it is") << "\n";
  if (loaded.rng) loaded.rng->restore();
  if (m.world_size < environment.world_size && environment.is_main_process())
    std::cerr << "acc: " << source.string() << " holds no random state for processes " << m.world_size << " to "
              << environment.world_size - 1 << "; they keep their own\n";
}

}  // namespace acc::detail
