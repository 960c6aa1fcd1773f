// A model checkpoint's safetensors files opened for reading tensor by tensor: one
// model.safetensors, or the shards a model.safetensors.index.json names (see weight_shards.hpp).
// Only the headers are read when it opens; a tensor's bytes are read when asked for. Shared by
// acc::load_checkpoint_in_model and acc::load_checkpoint_and_dispatch.
#pragma once

#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace acc::detail {

class CheckpointFiles {
 public:
  // `path`: a .safetensors file, a directory holding model.safetensors or an index, or the index.
  // A tensor in two files is an acc::Error (the checkpoint mixes two saves).
  ACC_DECL explicit CheckpointFiles(const std::filesystem::path& path);

  // Throws an acc::Error naming the checkpoint and every missing, unexpected or misshapen entry
  // of the module's state.
  ACC_DECL void check_fits(const torch::nn::Module& module) const;

  // The file holding tensor `name` (shared, so that a reader may keep it open).
  ACC_DECL const std::shared_ptr<const safetensors::File>& file_of(const std::string& name) const;
  const safetensors::TensorInfo& info(const std::string& name) const { return file_of(name)->info(name); }
  at::Tensor read(const std::string& name) const { return file_of(name)->read(name); }
  // The file, or the index of several: what messages name.
  const std::filesystem::path& origin() const { return origin_; }

 private:
  std::filesystem::path origin_;
  std::vector<std::shared_ptr<const safetensors::File>> files_;
  std::map<std::string, std::size_t> file_of_;  // tensor -> index in files_
};

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/checkpoint_files.ipp>
#endif
