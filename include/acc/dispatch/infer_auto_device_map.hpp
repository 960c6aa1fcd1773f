// acc::infer_auto_device_map(model, max_memory, options): a device map that places a model's
// units whole on the GPUs in order ("0", "1", ...), then the CPU, then disk, each within its
// budget (Python Accelerate's infer_auto_device_map):
//
//   auto map = acc::infer_auto_device_map(model, {{"0", "20GiB"}, {"cpu", "64GiB"}, {"disk", "1TB"}},
//                                         acc::DeviceMapOptions{{"GptBlock"}});  // no_split
//   std::cout << map;  // {'': 0, 'blocks.0': 0, ..., 'blocks.30': 'cpu', 'blocks.31': 'disk'}
//
// What is placed: the units (acc::Unit declarations, and the children of a torch::nn::Sequential
// model; see dispatch/module_units.hpp), in module order; a unit too large for the room left on a
// device is split into its own weights and its nested units, unless its class (Module::name()) is
// in `no_split` or it has none, and otherwise goes to the next device. Parameters and buffers
// outside every unit go with the model itself ("") on the execution device: the first GPU, or
// the CPU without GPUs. As in Accelerate, the execution device and, when there are GPUs, the CPU
// keep room for the largest unit that cannot be split, into which offloaded weights are loaded. A
// tensor reachable under two names (tied weights) is counted once, and every unit holding it
// goes to the same device.
//
// Unlike Accelerate, "disk" is used only when max_memory names it (with its budget), so that a
// model that fits nowhere is an acc::Error naming its size and the budgets. Sizes are the
// tensors' bytes as they are now (also of a model built under acc::init_empty_weights).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/dispatch/device_map.hpp>
#include <acc/dispatch/memory_size.hpp>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <vector>

namespace acc {

struct DeviceMapOptions {
  // Classes (Module::name()) whose modules are never split across devices: e.g. a block with a
  // residual connection that is a unit holding nested units.
  std::vector<std::string> no_split;
};

ACC_DECL DeviceMap infer_auto_device_map(const std::shared_ptr<torch::nn::Module>& model, const MaxMemory& max_memory,
                                         const DeviceMapOptions& options = {});

template <class Impl>
DeviceMap infer_auto_device_map(const torch::nn::ModuleHolder<Impl>& model, const MaxMemory& max_memory,
                                const DeviceMapOptions& options = {}) {
  return infer_auto_device_map(std::shared_ptr<torch::nn::Module>(model.ptr()), max_memory, options);
}

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/infer_auto_device_map.ipp>
#endif
