// acc::dispatch_model(model, device_map, offload_dir): runs a model split by a device map (Python
// Accelerate's dispatch_model). Each unit's weights move to its device and each unit runs there,
// its tensor inputs moved to it and its tensor outputs moved back to where its inputs were. Units
// on "cpu" when the map has GPUs, and units on "disk", are offloaded: they run on the execution
// device (the map's first GPU, else the CPU), their parameters hold no memory between calls, and
// just before each call they get their values, from pinned host memory ("cpu") or from a
// safetensors file per unit written once into `offload_dir` ("disk", `<unit name>.safetensors`,
// memory-mapped: on the CPU in their dtype the weights are views of the file, no copy); they give
// them up after it. Offloaded units are prefetched: as one's forward is queued, the next one's
// weights (in module order, the first after the last) start coming while it computes: on a GPU
// their copies are queued on a copy stream of their own (so the GPU holds two offloaded units'
// weights at a time, and the first one's between calls), and a disk unit's file pages are read
// ahead by the kernel. Buffers stay on the execution device, as with Accelerate's
// default offload_buffers=False. Without GPUs, "cpu" units simply stay where they are.
//
//   auto map = acc::infer_auto_device_map(net, {{"cpu", "2GiB"}, {"disk", "100GiB"}});
//   auto model = acc::dispatch_model(net, map, "offload");
//   torch::NoGradGuard no_grad;  // offloaded weights come and go: inference only
//   auto logits = model(tokens);  // on the device the tokens were on
//
// The returned DispatchedModel is called like the model: it moves the inputs to the execution
// device, calls the model (a torch::nn::Sequential child by child, so that each is a unit), and
// moves the outputs back to the inputs' device (Accelerate's io_same_device on the model). The
// placement lasts while it (or a copy) lives: then the units' hooks go, and offloaded
// parameters stay meta tensors (load the weights again, or load_checkpoint_and_dispatch again).
//
// Only units can be placed apart from their parent (libtorch's modules have no forward hooks):
// an entry that would place a tensor apart from the unit it runs in is an acc::Error naming both,
// and the model's own tensors (outside every unit) must be on the execution device, where its
// forward runs. Every parameter and buffer must be covered by an entry, tied tensors must have
// one placement, and no unit may already have FSDP's hooks.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/detail/tensor_tree.hpp>
#include <acc/dispatch/device_map.hpp>
#include <acc/dispatch/module_units.hpp>
#include <acc/dispatch/offloaded_weights.hpp>
#include <acc/fsdp/unit.hpp>
#include <acc/fsdp/unit_registry.hpp>

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace acc {
namespace detail {

// Around one dispatched unit's call: it runs on `device`; offloaded, its weights come before and
// go after, and once its forward is queued the next offloaded unit's start coming (prefetch_next).
// After the forward, not before: a disk unit's copy to the GPU blocks the host while it reads the
// file, which must not hold back this unit's kernels.
class DispatchHook final : public UnitHooks {
 public:
  DispatchHook(std::string unit, c10::Device device, std::optional<OffloadedWeights> weights)
      : unit_(std::move(unit)), device_(device), weights_(std::move(weights)) {}
  ACC_DECL void before_forward() override;
  void after_forward(const std::vector<at::Tensor>&) override {
    if (next_) next_->prefetch(device_);
    if (weights_) weights_->release();
  }
  std::optional<c10::Device> input_device() const override { return device_; }
  const std::optional<OffloadedWeights>& weights() const { return weights_; }
  std::optional<OffloadedWeights>& weights() { return weights_; }
  void prefetch_next(OffloadedWeights* next) { next_ = next; }

 private:
  std::string unit_;
  c10::Device device_;
  std::optional<OffloadedWeights> weights_;
  OffloadedWeights* next_ = nullptr;  // another hook's, which lives as long as this one
};

// Where each unit of a model goes under a device map, checked (see the top of this file): what
// dispatch_model applies, and where acc::load_checkpoint_and_dispatch loads each tensor.
struct DispatchPlan {
  std::vector<ModelUnit> units;
  std::vector<Placement> placements;  // of each unit
  std::vector<c10::Device> run_on;    // of each unit: its device, or the execution device if offloaded
  std::vector<bool> offloaded;        // of each unit: on "disk", or on "cpu" when the map has GPUs
  c10::Device execution_device = c10::kCPU;
  bool any_disk = false;
};
// Throws an acc::Error naming the problem and the fix for a map the units cannot run (tensors
// with no values are not checked here).
ACC_DECL DispatchPlan plan_dispatch(const std::shared_ptr<torch::nn::Module>& model, const DeviceMap& map);

// Parameters of disk-offloaded units whose values are in safetensors files already (the
// checkpoint's), by name: dispatch reads them from there instead of writing them to offload_dir.
using StoredWeights = std::map<std::string, OffloadedWeights::Stored>;

// A model's placement: made by dispatch_model, undone (the hooks uninstalled) when it goes.
class Dispatch {
 public:
  ACC_DECL Dispatch(const std::shared_ptr<torch::nn::Module>& model, DeviceMap map,
                    const std::filesystem::path& offload_dir, const StoredWeights& stored = {});
  ACC_DECL ~Dispatch();
  Dispatch(const Dispatch&) = delete;
  Dispatch& operator=(const Dispatch&) = delete;

  c10::Device execution_device() const { return execution_device_; }
  const DeviceMap& device_map() const { return map_; }

 private:
  DeviceMap map_;
  c10::Device execution_device_ = c10::kCPU;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, std::unique_ptr<DispatchHook>>> hooks_;
};

}  // namespace detail

template <class Holder>
class DispatchedModel {
 public:
  DispatchedModel(Holder model, std::shared_ptr<detail::Dispatch> dispatch)
      : module_(std::move(model)), dispatch_(std::move(dispatch)) {}

  template <class... Args>
  auto operator()(Args&&... args) {
    const auto origin = detail::first_tensor_device(args...);
    auto output = forward(detail::on_device(execution_device(), std::forward<Args>(args))...);
    if constexpr (detail::is_tensor_tree_v<decltype(output)>)
      if (origin) output = detail::on_device(*origin, output);
    return output;
  }

  // Where the model's own forward and its offloaded units run: the map's first GPU, else the CPU.
  c10::Device execution_device() const { return dispatch_->execution_device(); }
  const DeviceMap& device_map() const { return dispatch_->device_map(); }
  // The holder's constness is the pointer's, not the module's, as with ModuleHolder itself.
  auto* operator->() const { return module_.ptr().get(); }
  auto& operator*() const { return *module_.ptr(); }
  const Holder& unwrap() const { return module_; }

 private:
  template <class... Args>
  auto forward(Args&&... args) {
    if constexpr (detail::is_sequential_v<Holder>)
      return detail::forward_sequential(module_, std::forward<Args>(args)...);
    else
      return module_(std::forward<Args>(args)...);
  }

  Holder module_;
  std::shared_ptr<detail::Dispatch> dispatch_;
};

// Places `model` as `device_map` says (see the top of this file); `offload_dir` is needed when
// the map puts a unit on "disk", and is made if missing.
template <class Holder>
DispatchedModel<Holder> dispatch_model(Holder model, const DeviceMap& device_map,
                                       const std::filesystem::path& offload_dir = {}) {
  auto dispatch = std::make_shared<detail::Dispatch>(model.ptr(), device_map, offload_dir);
  return DispatchedModel<Holder>(std::move(model), std::move(dispatch));
}

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/dispatch_model.ipp>
#endif
