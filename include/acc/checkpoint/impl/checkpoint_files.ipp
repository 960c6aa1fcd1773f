// The bodies of checkpoint/checkpoint_files.hpp.
#pragma once

#include <acc/checkpoint/checkpoint_files.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/module_state.hpp>

#include <ATen/ops/empty.h>

namespace acc::detail {

ACC_DECL CheckpointFiles::CheckpointFiles(const std::filesystem::path& path) {
  const auto files = weights::model_files(path);
  origin_ = files.size() == 1 ? files.front() : files.front().parent_path() / weights::kIndexFile;
  for (const auto& file : files) {
    files_.push_back(std::make_shared<const safetensors::File>(file));
    for (const auto& entry : files_.back()->tensors()) {
      const auto [it, first] = file_of_.emplace(entry.first, files_.size() - 1);
      if (!first)
        throw Error("'" + origin_.string() + "': tensor '" + entry.first + "' is in two files (" +
                    files[it->second].filename().string() + " and " + file.filename().string() +
                    "); the checkpoint mixes two saves: save the model again");
    }
  }
}

ACC_DECL void CheckpointFiles::check_fits(const torch::nn::Module& module) const {
  std::map<std::string, at::Tensor> shapes;  // the files' tensors as meta tensors
  for (const auto& [name, index] : file_of_) {
    const auto& info = files_[index]->info(name);
    shapes.emplace(name, at::empty(info.shape, at::TensorOptions().device(at::kMeta).dtype(info.dtype)));
  }
  try {
    check_state_fits(module_state(module), shapes);
  } catch (const Error& e) {
    throw Error("'" + origin_.string() + "': " + e.what());
  }
}

ACC_DECL const std::shared_ptr<const safetensors::File>& CheckpointFiles::file_of(const std::string& name) const {
  const auto it = file_of_.find(name);
  if (it == file_of_.end()) throw Error("'" + origin_.string() + "' has no tensor '" + name + "'");
  return files_[it->second];
}

}  // namespace acc::detail
