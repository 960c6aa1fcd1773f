// acc::load_checkpoint_in_model(module, path): a model's weights from a safetensors checkpoint (a
// model.safetensors file, or the shards and model.safetensors.index.json that save_model writes),
// read one tensor at a time into a module whose tensors may be on the meta device
// (acc::init_empty_weights): each meta tensor takes the tensor read from the file as its storage
// (no copy), each real one copies it in place. So the host holds the model plus one tensor, not
// the model twice (Python Accelerate's load_checkpoint_in_model).
//
//   Net net{nullptr};
//   {
//     const auto empty = acc::init_empty_weights();
//     net = Net();
//   }
//   acc::load_checkpoint_in_model(*net, "out/model");  // directory, file or index
//
// Every entry is checked against the files' headers before anything is read: a missing,
// unexpected or misshapen one is an acc::Error naming them all, and leaves the module unchanged.
// A file's dtype is converted to the module's (as Python's load_state_dict does).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <filesystem>

namespace acc {

// Meta tensors get their storage on `device` (the CPU unless given); tensors with storage keep
// their device.
ACC_DECL void load_checkpoint_in_model(torch::nn::Module& module, const std::filesystem::path& path,
                                       c10::Device device = c10::kCPU);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/load_checkpoint_in_model.ipp>
#endif
