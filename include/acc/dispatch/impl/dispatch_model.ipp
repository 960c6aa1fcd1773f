// The bodies of dispatch/dispatch_model.hpp.
#pragma once

#include <acc/dispatch/dispatch_model.hpp>
#include <acc/dispatch/module_units.hpp>

#include <ATen/core/grad_mode.h>
#include <torch/cuda.h>
#if ACC_HAS_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <map>
#include <system_error>

namespace acc {
namespace detail {

ACC_DECL void DispatchHook::before_forward() {
  if (!weights_) return;
  const auto& parameters = weights_->parameters();
  if (at::GradMode::is_enabled() &&
      std::any_of(parameters.begin(), parameters.end(), [](const UnitTensor& p) { return p.tensor.requires_grad(); }))
    throw Error("unit '" + unit_ +
                "' is offloaded: its weights leave after each call, so autograd could not use them in backward. A "
                "dispatched model with offloaded units is for inference: call it under torch::NoGradGuard");
  weights_->load(device_);
}

namespace {

std::string placement_text(const Placement& placement) {
  return placement.is_gpu() ? "GPU " + placement.to_string() : "\"" + placement.to_string() + "\"";
}

std::string unit_text(const ModelUnit& unit) {
  return unit.name.empty() ? "the model itself (outside every unit)" : "unit '" + unit.name + "'";
}

}  // namespace

ACC_DECL DispatchPlan plan_dispatch(const std::shared_ptr<torch::nn::Module>& model, const DeviceMap& map) {
  if (map.empty())
    throw Error(
        "acc::dispatch_model: the device map is empty; give {{\"\", \"cpu\"}} or a map from "
        "acc::infer_auto_device_map");
  DispatchPlan plan;
  plan.units = model_units(model);
  const auto& units = plan.units;

  // Accelerate's main device: the first GPU in the map, else the CPU.
  std::optional<Placement> main;
  for (const auto& [name, placement] : map.entries())
    if (!main && placement.is_gpu()) main = placement;
  if (!main) main = Placement::cpu();
  plan.execution_device = main->device();

  auto& placements = plan.placements;
  std::string uncovered;
  std::map<const c10::TensorImpl*, std::pair<std::string, Placement>> tied;
  for (const auto& unit : units) {
    const auto entry = unit.name.empty() ? std::nullopt : map.find(unit.name);
    placements.push_back(entry ? *entry : unit.name.empty() ? *main : placements[unit.parent]);
    const auto& placement = placements.back();
    for (const auto& t : unit.tensors) {
      const auto found = map.find(t.name);
      if (!found) {
        uncovered += (uncovered.empty() ? "" : ", ") + t.name;
        continue;
      }
      if (*found != placement)
        throw Error("the device map puts '" + t.name + "' on " + placement_text(*found) + ", but it runs in " +
                    unit_text(unit) + ", which is on " + placement_text(placement) +
                    (unit.name.empty() ? " (the execution device, where the model's forward runs)" : "") +
                    ": only units can be placed apart (libtorch's modules have no forward hooks); place its unit as a "
                    "whole, or declare the module holding it an acc::Unit");
      const auto [it, first] = tied.emplace(t.tensor.unsafeGetTensorImpl(), std::make_pair(t.name, placement));
      if (!first && it->second.second != placement)
        throw Error("'" + t.name + "' and '" + it->second.first +
                    "' are the same (tied) tensor, but the device map "
                    "puts them on " +
                    placement_text(placement) + " and " + placement_text(it->second.second) +
                    ": put their units on one device");
    }
    if (placement.is_gpu() && placement.gpu_index() >= static_cast<int>(torch::cuda::device_count()))
      throw Error("the device map puts " + unit_text(unit) + " on GPU " + placement.to_string() +
                  ", but this process sees " + std::to_string(torch::cuda::device_count()) + " CUDA device(s)");
    const bool offload = placement == Placement::disk() || (placement == Placement::cpu() && main->is_gpu());
    plan.offloaded.push_back(offload);
    plan.run_on.push_back(offload ? plan.execution_device : placement.device());
    plan.any_disk = plan.any_disk || placement == Placement::disk();
  }
  if (!uncovered.empty())
    throw Error("the device map " + map.to_string() + " places no entry over " + uncovered +
                ": every parameter and buffer needs one (\"\" covers the whole model)");

  auto& registry = UnitRegistry::instance();
  for (std::size_t u = 1; u < units.size(); ++u) {
    const auto call = registry.call(*units[u].module);
    if (call.hooks)
      throw Error(unit_text(units[u]) +
                  " already has hooks (FSDP's, or an earlier acc::dispatch_model's that is "
                  "still alive): dispatch a model that no strategy has prepared, once");
    if (plan.offloaded[u] && call.recompute)
      throw Error(unit_text(units[u]) +
                  " is offloaded and checkpointed (acc::checkpoint_units): its recompute in "
                  "backward would find no weights; turn checkpointing off for it");
  }
  return plan;
}

ACC_DECL Dispatch::Dispatch(const std::shared_ptr<torch::nn::Module>& model, DeviceMap map,
                            const std::filesystem::path& offload_dir, const StoredWeights& stored)
    : map_(std::move(map)) {
  const auto plan = plan_dispatch(model, map_);
  const auto& units = plan.units;
  execution_device_ = plan.execution_device;
  for (std::size_t u = 0; u < units.size(); ++u)
    for (const auto& t : units[u].tensors)
      if (t.tensor.is_meta() && !(plan.offloaded[u] && t.parameter && stored.count(t.name)))
        throw Error("'" + t.name +
                    "' has no values (a meta tensor, as acc::init_empty_weights makes, or an offloaded weight whose "
                    "dispatch has ended): load the weights before acc::dispatch_model, or load and dispatch with "
                    "acc::load_checkpoint_and_dispatch");
  bool writes_disk = false;  // a disk-offloaded parameter whose values are in no file yet
  for (std::size_t u = 0; u < units.size(); ++u)
    for (const auto& t : units[u].tensors)
      writes_disk = writes_disk || (plan.placements[u] == Placement::disk() && t.parameter && !stored.count(t.name));
  if (writes_disk) {
    if (offload_dir.empty())
      throw Error(
          "the device map puts units on \"disk\": give acc::dispatch_model an offload_dir to write their "
          "weights to");
    std::error_code ec;
    std::filesystem::create_directories(offload_dir, ec);
    if (ec) throw Error("cannot make offload_dir '" + offload_dir.string() + "': " + ec.message());
  }

  // Checked all before changing anything; then the values of every offloaded unit are taken
  // before any is released (a tied tensor may be in two of them).
  std::vector<std::optional<OffloadedWeights>> offloaded(units.size());
  at::NoGradGuard no_grad;
  for (std::size_t u = 0; u < units.size(); ++u) {
    std::vector<UnitTensor> parameters;
    std::vector<OffloadedWeights::Stored> sources;
    for (const auto& t : units[u].tensors) {
      if (plan.offloaded[u] && t.parameter) {
        parameters.push_back(t);
        if (const auto it = stored.find(t.name); it != stored.end()) sources.push_back(it->second);
      } else if (t.tensor.device() != plan.run_on[u]) {
        t.tensor.set_data(t.tensor.to(plan.run_on[u]));
      }
    }
    if (parameters.empty()) continue;
    if (plan.placements[u] != Placement::disk())
      offloaded[u] = OffloadedWeights::in_memory(parameters, /*pin=*/execution_device_.is_cuda());
    else if (sources.size() == parameters.size())
      offloaded[u] = OffloadedWeights::in_files(parameters, sources);
    else
      offloaded[u] = OffloadedWeights::on_disk(parameters, offload_dir / (units[u].name + ".safetensors"));
  }
  for (auto& weights : offloaded)
    if (weights) weights->release();
  for (std::size_t u = 1; u < units.size(); ++u) {
    auto hook = std::make_unique<DispatchHook>(units[u].name, plan.run_on[u], std::move(offloaded[u]));
    UnitRegistry::instance().install(*units[u].module, hook.get());
    hooks_.emplace_back(units[u].module, std::move(hook));
  }
  // Each offloaded unit prefetches the weights of the one that runs after it: the next in module
  // order past the units nested in it, which run inside its forward (had it prefetched its first
  // nested unit, that one's copy would sit unused until the next call). The last wraps to the
  // first, for the next call. On a GPU the copies go on one copy stream.
  std::vector<DispatchHook*> offloaded_hooks;  // in module order
  std::vector<std::string> offloaded_units;    // their names
  for (std::size_t u = 1; u < units.size(); ++u)
    if (hooks_[u - 1].second->weights()) {
      offloaded_hooks.push_back(hooks_[u - 1].second.get());
      offloaded_units.push_back(units[u].name);
    }
  for (std::size_t i = 0; i < offloaded_hooks.size(); ++i) {
    std::size_t next = i + 1;
    while (next < offloaded_hooks.size() && is_name_prefix(offloaded_units[i], offloaded_units[next])) ++next;
    offloaded_hooks[i]->prefetch_next(&*offloaded_hooks[next % offloaded_hooks.size()]->weights());
  }
#if ACC_HAS_CUDA
  if (execution_device_.is_cuda() && !offloaded_hooks.empty()) {
    const auto copy_stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, execution_device_.index());
    for (auto* hook : offloaded_hooks) hook->weights()->copy_on(copy_stream);
  }
#endif
}

ACC_DECL Dispatch::~Dispatch() {
  for (const auto& [module, hook] : hooks_) UnitRegistry::instance().install(*module, nullptr);
}

}  // namespace detail
}  // namespace acc
