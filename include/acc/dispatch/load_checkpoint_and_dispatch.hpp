// acc::load_checkpoint_and_dispatch(model, checkpoint, device_map, options): loads a safetensors
// checkpoint (one model.safetensors, or shards with model.safetensors.index.json) into a model
// built under acc::init_empty_weights, each tensor read straight to where the device map puts it,
// and dispatches the model (Python Accelerate's load_checkpoint_and_dispatch):
//
//   Gpt gpt{nullptr};
//   {
//     const auto empty = acc::init_empty_weights();
//     gpt = Gpt(config);  // no memory yet
//   }
//   acc::LoadAndDispatchOptions options;
//   options.max_memory = {{"0", "20GiB"}, {"cpu", "64GiB"}, {"disk", "1TB"}};
//   options.no_split = {"GptBlock"};
//   auto model = acc::load_checkpoint_and_dispatch(gpt, "llm", "auto", options);
//
// device_map is an acc::DeviceMap or one of Accelerate's names, planned by acc::infer_auto_device_map
// for the model in options.dtype within options.max_memory (when empty: acc::available_memory(),
// with one GPU 90% of its free memory, leaving room for activations, as Accelerate does):
// "balanced" (and "auto", as in Accelerate) spreads the model evenly over the GPUs
// (acc::balanced_memory), "balanced_low_0" keeps GPU 0 as empty as it can, "sequential" fills the
// GPUs in order. The tensors are read one at a time, so the host
// holds the weights placed on the CPU plus one tensor in flight, not the model: a tensor on a GPU
// goes there from the file, a CPU-offloaded one (on "cpu" when the map has GPUs) into pinned host
// memory, and a disk-offloaded parameter is not read at all: dispatch reads it from the
// checkpoint's file at each call. Only when options.dtype changes a disk-offloaded unit's dtype is
// the unit converted and written once to options.offload_dir/<unit>.safetensors (as Accelerate
// writes converted weights to its offload_folder), one unit at a time.
//
// Every entry of the checkpoint is checked against the model before anything is read (as
// acc::load_checkpoint_in_model checks), and the map against the units (as acc::dispatch_model
// checks): an acc::Error names the problem and leaves the model unchanged. options.dtype converts
// the floating-point tensors (integer and bool ones keep theirs, as in Accelerate); without it each
// tensor takes the model's dtype.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/dispatch/device_map.hpp>
#include <acc/dispatch/dispatch_model.hpp>
#include <acc/dispatch/memory_size.hpp>

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {

struct LoadAndDispatchOptions {
  MaxMemory max_memory;               // a named device_map's budgets (empty: what the devices have free)
  std::vector<std::string> no_split;  // classes a named map never splits (DeviceMapOptions::no_split)
  std::filesystem::path offload_dir;  // where disk-offloaded units converted to `dtype` are written
  std::optional<at::ScalarType> dtype;
};

namespace detail {

// Loads the checkpoint as the map places it and returns the placement (the template's body).
ACC_DECL std::shared_ptr<Dispatch> load_and_dispatch(const std::shared_ptr<torch::nn::Module>& model,
                                                     const std::filesystem::path& checkpoint, const DeviceMap& map,
                                                     const LoadAndDispatchOptions& options);

// Gives the model's floating-point meta tensors `dtype`, so that "auto" plans their final sizes.
ACC_DECL void convert_meta_tensors(torch::nn::Module& model, const std::optional<at::ScalarType>& dtype);

// The map a name ("auto", "balanced", ...) stands for; any other text is an acc::Error naming the choices.
ACC_DECL DeviceMap auto_device_map(const std::shared_ptr<torch::nn::Module>& model, std::string_view device_map,
                                   const LoadAndDispatchOptions& options);

// The budgets a named map plans within when the user gave none: what the devices have free, and
// of a single GPU 90%, the rest left for activations (Accelerate's get_balanced_memory).
ACC_DECL MaxMemory default_budgets(MaxMemory available, bool sequential);

}  // namespace detail

template <class Holder>
DispatchedModel<Holder> load_checkpoint_and_dispatch(Holder model, const std::filesystem::path& checkpoint,
                                                     const DeviceMap& device_map,
                                                     const LoadAndDispatchOptions& options = {}) {
  auto dispatch = detail::load_and_dispatch(model.ptr(), checkpoint, device_map, options);
  return DispatchedModel<Holder>(std::move(model), std::move(dispatch));
}

// A named device_map ("auto", "balanced", "balanced_low_0", "sequential"): see the top of this file.
template <class Holder>
DispatchedModel<Holder> load_checkpoint_and_dispatch(Holder model, const std::filesystem::path& checkpoint,
                                                     std::string_view device_map,
                                                     const LoadAndDispatchOptions& options = {}) {
  const auto map = detail::auto_device_map(model.ptr(), device_map, options);
  return load_checkpoint_and_dispatch(std::move(model), checkpoint, map, options);
}

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/load_checkpoint_and_dispatch.ipp>
#endif
