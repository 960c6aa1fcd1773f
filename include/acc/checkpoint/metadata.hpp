// acc_state.json, the file a checkpoint directory is complete with: written last by
// save_state, required by load_state. It says how the checkpoint was made (world size,
// strategy, precision, libtorch), lists the files with their sizes (so that a truncated or
// missing one is named before anything is read), and holds the small state: the gradient
// accumulation step and every prepared data loader's sampler seed and position on each rank.
#pragma once

#include <acc/error.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace acc {

struct CheckpointMetadata {
  static constexpr const char* file_name = "acc_state.json";
  static constexpr int64_t current_format = 1;

  struct DataLoader {
    uint64_t seed = 0;
    int64_t batch_size = 0;
    int64_t dataset_size = -1;                           // -1: a stream
    std::vector<std::pair<int64_t, int64_t>> positions;  // per rank: epoch, batches had in it
  };

  int64_t format = current_format;
  std::string library_version;
  std::string torch_version;
  int64_t optimizer_format = 0;  // see compat::optimizer_archive_format
  int64_t world_size = 1;
  std::string strategy, precision, sampler;
  int64_t step = 0;  // micro-steps since the last gradient synchronization
  std::vector<std::string> models, optimizers, schedulers, custom_objects, random_states;
  std::vector<std::string> gradients;  // per rank, when saved in the middle of gradient accumulation
  std::optional<std::string> scaler;
  std::vector<DataLoader> data_loaders;
  std::map<std::string, uint64_t> file_sizes;

  std::string to_json() const {
    nlohmann::ordered_json j;
    j["format"] = format;
    j["library_version"] = library_version;
    j["torch_version"] = torch_version;
    j["optimizer_format"] = optimizer_format;
    j["world_size"] = world_size;
    j["strategy"] = strategy;
    j["precision"] = precision;
    j["sampler"] = sampler;
    j["step"] = step;
    j["models"] = models;
    j["optimizers"] = optimizers;
    j["schedulers"] = schedulers;
    j["scaler"] = scaler ? nlohmann::ordered_json(*scaler) : nlohmann::ordered_json(nullptr);
    j["custom_objects"] = custom_objects;
    j["random_states"] = random_states;
    j["gradients"] = gradients;
    j["data_loaders"] = nlohmann::ordered_json::array();
    for (const auto& d : data_loaders) {
      auto positions = nlohmann::ordered_json::array();
      for (const auto& [epoch, batches] : d.positions) positions.push_back({{"epoch", epoch}, {"batches", batches}});
      j["data_loaders"].push_back(
          {{"seed", d.seed}, {"batch_size", d.batch_size}, {"dataset_size", d.dataset_size}, {"positions", positions}});
    }
    j["file_sizes"] = file_sizes;
    return j.dump(2) + "\n";
  }

  // Reads dir/acc_state.json; an error names the file and what is wrong with it.
  static CheckpointMetadata read(const std::filesystem::path& dir) {
    const auto file = dir / file_name;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
      throw Error("checkpoint directory '" + dir.string() + "' does not exist");
    std::ifstream in(file);
    if (!in)
      throw Error(
          "'" + file.string() +
          "' is missing: not a checkpoint, or one whose save did not finish (save_state writes this file last)");
    CheckpointMetadata m;
    try {
      const auto j = nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}));
      j.at("format").get_to(m.format);
      if (m.format != current_format)
        throw Error("'" + file.string() + "' has format " + std::to_string(m.format) + "; this accelerate-cpp reads " +
                    std::to_string(current_format));
      j.at("library_version").get_to(m.library_version);
      j.at("torch_version").get_to(m.torch_version);
      j.at("optimizer_format").get_to(m.optimizer_format);
      j.at("world_size").get_to(m.world_size);
      j.at("strategy").get_to(m.strategy);
      j.at("precision").get_to(m.precision);
      j.at("sampler").get_to(m.sampler);
      j.at("step").get_to(m.step);
      j.at("models").get_to(m.models);
      j.at("optimizers").get_to(m.optimizers);
      j.at("schedulers").get_to(m.schedulers);
      if (!j.at("scaler").is_null()) m.scaler = j.at("scaler").get<std::string>();
      j.at("custom_objects").get_to(m.custom_objects);
      j.at("random_states").get_to(m.random_states);
      j.at("gradients").get_to(m.gradients);
      for (const auto& d : j.at("data_loaders")) {
        DataLoader loader;
        d.at("seed").get_to(loader.seed);
        d.at("batch_size").get_to(loader.batch_size);
        d.at("dataset_size").get_to(loader.dataset_size);
        for (const auto& p : d.at("positions"))
          loader.positions.emplace_back(p.at("epoch").get<int64_t>(), p.at("batches").get<int64_t>());
        m.data_loaders.push_back(std::move(loader));
      }
      j.at("file_sizes").get_to(m.file_sizes);
    } catch (const nlohmann::json::exception& e) {
      throw Error("'" + file.string() + "' is not a valid checkpoint description: " + e.what());
    }
    return m;
  }
};

}  // namespace acc
