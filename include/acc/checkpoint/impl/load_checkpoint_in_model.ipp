// The body of checkpoint/load_checkpoint_in_model.hpp.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/checkpoint/load_checkpoint_in_model.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/module_state.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace acc {

ACC_DECL void load_checkpoint_in_model(torch::nn::Module& module, const std::filesystem::path& path,
                                       c10::Device device) {
  const auto files = weights::model_files(path);
  // Errors name the file, or the index of several.
  const auto origin = files.size() == 1 ? files.front() : files.front().parent_path() / weights::kIndexFile;
  std::vector<safetensors::File> headers;
  std::map<std::string, std::size_t> file_of;  // tensor -> index in headers
  std::map<std::string, at::Tensor> shapes;    // the files' tensors as meta tensors, for the check
  for (const auto& file : files) {
    headers.emplace_back(file);
    for (const auto& [name, info] : headers.back().tensors()) {
      if (!file_of.emplace(name, headers.size() - 1).second)
        throw Error("'" + origin.string() + "': tensor '" + name + "' is in two files (" +
                    files[file_of.at(name)].filename().string() + " and " + file.filename().string() +
                    "); the checkpoint mixes two saves: save the model again");
      shapes.emplace(name, at::empty(info.shape, at::TensorOptions().device(at::kMeta).dtype(info.dtype)));
    }
  }
  try {
    detail::check_state_fits(detail::module_state(module), shapes);
  } catch (const Error& e) {
    throw Error("'" + origin.string() + "': " + e.what());
  }

  at::NoGradGuard no_grad;
  const auto load = [&](const std::string& name, const at::Tensor& target) {
    const auto value = headers[file_of.at(name)].read(name);
    if (target.is_meta())
      detail::assign_in_place(target, value.to(device, target.scalar_type()));
    else
      target.copy_(value);
  };
  for (const auto& p : module.named_parameters()) load(p.key(), p.value());
  for (const auto& b : module.named_buffers()) load(b.key(), b.value());
}

}  // namespace acc
