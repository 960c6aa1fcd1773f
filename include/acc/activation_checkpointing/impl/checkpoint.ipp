#pragma once

#include <acc/activation_checkpointing/checkpoint.hpp>
#include <acc/detail/torch_compat.hpp>
#include <acc/error.hpp>

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/empty.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace acc::detail {

// The states of the random generators a forward may draw from: the CPU's and those of the CUDA
// devices its inputs are on (as PyTorch's checkpoint keeps them).
struct GeneratorStates {
  std::vector<std::pair<c10::Device, at::Tensor>> states;

  static GeneratorStates of(const std::vector<c10::Device>& devices) {
    GeneratorStates captured;
    for (const auto& device : devices) {
      auto generator = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(generator.mutex());
      captured.states.emplace_back(device, generator.get_state());
    }
    return captured;
  }
  void restore() const {
    for (const auto& [device, state] : states) {
      auto generator = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
  }
};

// Whether autocast is on, and to which dtype, on the CPU and on CUDA.
struct AutocastStates {
  bool cpu = false, cuda = false;
  at::ScalarType cpu_dtype = at::kBFloat16, cuda_dtype = at::kHalf;

  static AutocastStates now() {
    return {compat::autocast_enabled(c10::DeviceType::CPU), compat::autocast_enabled(c10::DeviceType::CUDA),
            compat::autocast_dtype(c10::DeviceType::CPU), compat::autocast_dtype(c10::DeviceType::CUDA)};
  }
  void apply() const {
    compat::set_autocast_enabled(c10::DeviceType::CPU, cpu);
    compat::set_autocast_dtype(c10::DeviceType::CPU, cpu_dtype);
    compat::set_autocast_enabled(c10::DeviceType::CUDA, cuda);
    compat::set_autocast_dtype(c10::DeviceType::CUDA, cuda_dtype);
  }
};

// What the backward of a checkpoint needs besides the inputs.
struct Recompute : torch::CustomClassHolder {
  FlatForward forward;
  std::vector<c10::Device> devices;  // whose generators the forward saw
  GeneratorStates generators;
  AutocastStates autocast;
  std::vector<bool> requires_grad;  // by input
  std::size_t outputs = 0;
};

// While a checkpoint recomputes: the generators and autocast as the first forward saw them; the
// state of the backward around it comes back after.
class RecomputeScope {
 public:
  explicit RecomputeScope(const Recompute& recompute)
      : generators_(GeneratorStates::of(recompute.devices)), autocast_(AutocastStates::now()) {
    recompute.generators.restore();
    recompute.autocast.apply();
    autocasting_ = recompute.autocast.cpu || recompute.autocast.cuda;
    if (autocasting_) at::autocast::increment_nesting();
  }
  ~RecomputeScope() {
    if (autocasting_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    autocast_.apply();
    generators_.restore();
  }
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;

 private:
  GeneratorStates generators_;
  AutocastStates autocast_;
  bool autocasting_ = false;
};

// The autograd node of one checkpoint. Its inputs are the forward's tensors plus an anchor that
// requires a gradient, so that the node is part of the graph even when no input requires one
// (the parameters inside still do).
class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                c10::intrusive_ptr<Recompute> recompute,
                                                at::TensorList inputs_and_anchor) {
    const auto inputs = inputs_and_anchor.slice(0, inputs_and_anchor.size() - 1).vec();
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(inputs);
    auto outputs = recompute->forward(inputs);
    recompute->outputs = outputs.size();
    torch::autograd::variable_list integral;  // integer and bool outputs have no gradient
    for (const auto& output : outputs)
      if (output.defined() && !at::isFloatingType(output.scalar_type()) && !at::isComplexType(output.scalar_type()))
        integral.push_back(output);
    ctx->mark_non_differentiable(integral);
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(recompute);
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto recompute = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data.at("recompute").toCapsule());
    const auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> inputs;
    inputs.reserve(saved.size());
    for (std::size_t i = 0; i < saved.size(); ++i) {
      if (!saved[i].defined()) {
        inputs.emplace_back();
        continue;
      }
      auto input = saved[i].detach();
      input.requires_grad_(recompute->requires_grad[i]);
      inputs.push_back(std::move(input));
    }
    std::vector<at::Tensor> outputs;
    {
      RecomputeScope scope(*recompute);
      at::AutoGradMode grad_mode(true);
      outputs = recompute->forward(inputs);
    }
    if (outputs.size() != recompute->outputs)
      throw Error("acc::checkpoint: the recomputed forward returned " + std::to_string(outputs.size()) +
                  " tensors where the first run returned " + std::to_string(recompute->outputs) +
                  "; a checkpointed function must return the same tensors each time it runs");
    torch::autograd::variable_list roots, root_grads;
    for (std::size_t i = 0; i < outputs.size() && i < grads.size(); ++i)
      if (outputs[i].defined() && outputs[i].requires_grad() && grads[i].defined()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    torch::autograd::variable_list input_grads{at::Tensor()};  // the Recompute argument
    for (std::size_t i = 0; i < inputs.size(); ++i)
      input_grads.push_back(recompute->requires_grad[i] ? inputs[i].grad() : at::Tensor());
    input_grads.emplace_back();  // the anchor
    return input_grads;
  }
};

ACC_DECL std::vector<at::Tensor> run_checkpointed(FlatForward forward, std::vector<at::Tensor> inputs) {
  if (!at::GradMode::is_enabled()) return forward(inputs);
  auto recompute = c10::make_intrusive<Recompute>();
  recompute->forward = std::move(forward);
  recompute->devices.emplace_back(c10::kCPU);
  for (const auto& input : inputs) {
    recompute->requires_grad.push_back(input.defined() && input.requires_grad());
    if (input.defined() && input.is_cuda() &&
        std::find(recompute->devices.begin(), recompute->devices.end(), input.device()) == recompute->devices.end())
      recompute->devices.push_back(input.device());
  }
  recompute->generators = GeneratorStates::of(recompute->devices);
  recompute->autocast = AutocastStates::now();
  static const at::Tensor anchor = at::empty({0}).requires_grad_(true);
  inputs.push_back(anchor);
  // As a TensorList: Function::apply counts the tensors of a list, not those of a std::vector.
  return CheckpointFunction::apply(std::move(recompute), at::TensorList(inputs));
}

}  // namespace acc::detail
