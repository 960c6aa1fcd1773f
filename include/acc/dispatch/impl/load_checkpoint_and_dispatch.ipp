// The bodies of dispatch/load_checkpoint_and_dispatch.hpp.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/checkpoint/checkpoint_files.hpp>
#include <acc/detail/files.hpp>
#include <acc/dispatch/available_memory.hpp>
#include <acc/dispatch/balanced_memory.hpp>
#include <acc/dispatch/infer_auto_device_map.hpp>
#include <acc/dispatch/load_checkpoint_and_dispatch.hpp>
#include <acc/dispatch/placement.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>

#include <set>
#include <string>
#include <system_error>
#include <vector>

namespace acc::detail {

namespace {

// The dtype a tensor is loaded in: options.dtype for floating-point ones, else its own.
at::ScalarType loaded_dtype(const at::Tensor& tensor, const std::optional<at::ScalarType>& dtype) {
  return dtype && at::isFloatingType(tensor.scalar_type()) ? *dtype : tensor.scalar_type();
}

// Writes the disk-offloaded parameters of unit `unit` converted to their dtype into
// offload_dir/<unit>.safetensors, and records them as stored there.
void write_converted(const CheckpointFiles& checkpoint, const std::string& unit,
                     const std::vector<std::pair<UnitTensor, at::ScalarType>>& parameters,
                     const std::filesystem::path& offload_dir, StoredWeights& stored) {
  std::error_code ec;
  std::filesystem::create_directories(offload_dir, ec);
  if (ec) throw Error("cannot make offload_dir '" + offload_dir.string() + "': " + ec.message());
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [p, dtype] : parameters) tensors.emplace_back(p.name, checkpoint.read(p.name).to(dtype));
  const auto path = offload_dir / (unit + ".safetensors");
  safetensors::save_file(tensors, path, {{"format", "pt"}});
  const auto file = std::make_shared<const safetensors::File>(path);
  for (const auto& entry : parameters) stored[entry.first.name] = {file, entry.first.name};
}

}  // namespace

ACC_DECL void convert_meta_tensors(torch::nn::Module& model, const std::optional<at::ScalarType>& dtype) {
  const auto convert = [&](const at::Tensor& t) {
    if (t.is_meta() && loaded_dtype(t, dtype) != t.scalar_type())
      assign_in_place(t, at::empty(t.sizes(), t.options().dtype(*dtype)));
  };
  for (const auto& p : model.parameters()) convert(p);
  for (const auto& b : model.buffers()) convert(b);
}

ACC_DECL MaxMemory default_budgets(MaxMemory available, bool sequential) {
  std::vector<std::string> gpus;
  for (const auto& [name, size] : available)
    if (Placement(std::string_view{name}).is_gpu() && size.bytes() > 0) gpus.push_back(name);
  if (!sequential && gpus.size() == 1) available.at(gpus.front()) = available.at(gpus.front()).bytes() / 10 * 9;
  return available;
}

ACC_DECL DeviceMap auto_device_map(const std::shared_ptr<torch::nn::Module>& model, std::string_view device_map,
                                   const LoadAndDispatchOptions& options) {
  const bool sequential = device_map == "sequential", low_zero = device_map == "balanced_low_0";
  if (!sequential && !low_zero && device_map != "balanced" && device_map != "auto")
    throw Error("device_map '" + std::string(device_map) +
                "': acc::load_checkpoint_and_dispatch takes an acc::DeviceMap or \"auto\" (the same as "
                "\"balanced\"), \"balanced\", \"balanced_low_0\" or \"sequential\"");
  if (!model) throw Error("acc::load_checkpoint_and_dispatch: the model holder is empty");
  convert_meta_tensors(*model, options.dtype);
  auto budgets = options.max_memory.empty() ? default_budgets(available_memory(), sequential) : options.max_memory;
  if (!sequential)
    budgets = balanced_memory(model, budgets, BalancedMemoryOptions().no_split(options.no_split).low_zero(low_zero));
  return infer_auto_device_map(model, budgets, DeviceMapOptions{options.no_split});
}

ACC_DECL std::shared_ptr<Dispatch> load_and_dispatch(const std::shared_ptr<torch::nn::Module>& model,
                                                     const std::filesystem::path& checkpoint_path, const DeviceMap& map,
                                                     const LoadAndDispatchOptions& options) {
  if (!model) throw Error("acc::load_checkpoint_and_dispatch: the model holder is empty");
  const CheckpointFiles checkpoint(checkpoint_path);
  checkpoint.check_fits(*model);
  const auto plan = plan_dispatch(model, map);
  convert_meta_tensors(*model, options.dtype);
  if (options.offload_dir.empty())
    for (std::size_t u = 0; u < plan.units.size(); ++u)
      for (const auto& t : plan.units[u].tensors) {
        const auto stored_as = checkpoint.info(t.name).dtype, wanted = loaded_dtype(t.tensor, options.dtype);
        if (plan.placements[u] == Placement::disk() && t.parameter && stored_as != wanted)
          throw Error("unit '" + plan.units[u].name + "' is on \"disk\" and options.dtype converts its weights (" +
                      c10::toString(stored_as) + " in '" + checkpoint.origin().string() + "', " +
                      c10::toString(wanted) + " wanted): give options.offload_dir to write them to once, converted");
      }

  StoredWeights stored;
  std::set<const c10::TensorImpl*> loaded;  // a tied tensor is read under its first name only
  at::NoGradGuard no_grad;
  for (std::size_t u = 0; u < plan.units.size(); ++u) {
    const auto& unit = plan.units[u];
    std::vector<std::pair<UnitTensor, at::ScalarType>> to_convert;
    for (const auto& t : unit.tensors) {
      const auto dtype = loaded_dtype(t.tensor, options.dtype);
      if (plan.placements[u] == Placement::disk() && t.parameter) {
        if (checkpoint.info(t.name).dtype == dtype)
          stored[t.name] = {checkpoint.file_of(t.name), t.name};
        else
          to_convert.emplace_back(t, dtype);
        continue;
      }
      if (!loaded.insert(t.tensor.unsafeGetTensorImpl()).second) continue;
      const auto value = checkpoint.read(t.name);
      if (plan.offloaded[u] && t.parameter) {  // on "cpu", copied to a GPU at each call: pinned
        assign_in_place(t.tensor, pinned_copy(value, dtype));
      } else {
        assign_in_place(t.tensor, value.to(plan.run_on[u], dtype));
      }
    }
    if (!to_convert.empty()) write_converted(checkpoint, unit.name, to_convert, options.offload_dir, stored);
  }
  return std::make_shared<Dispatch>(model, map, options.offload_dir, stored);
}

}  // namespace acc::detail
