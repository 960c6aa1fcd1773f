// What a device map places: a model's units (the modules declared with acc::Unit and, in a
// torch::nn::Sequential model, its children), each with the parameters and buffers it holds
// outside its nested units. Tensors outside every unit belong to the model itself, the root.
// libtorch's modules have no forward hooks: only a unit's call can move its inputs or bring its
// weights in, so a unit is the smallest thing a device map can place apart from its parent.
#pragma once

#include <acc/detail/linkage.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace acc::detail {

struct UnitTensor {
  std::string name;  // in the model, as named_parameters() names it
  at::Tensor tensor;
  bool parameter;  // else a buffer
};

struct ModelUnit {
  std::string name;        // "" for the root
  std::string class_name;  // Module::name()
  std::shared_ptr<torch::nn::Module> module;
  std::size_t parent = 0;             // the enclosing unit (the root's is itself)
  std::vector<std::size_t> children;  // the units nested directly in it, in module order
  std::vector<UnitTensor> tensors;    // its own: those in no nested unit; a tied one under each name
};

// The units of `model`, root first, the others in named_modules() order (a parent before its
// children). `model` must be the shared module itself (a holder's ptr()).
ACC_DECL std::vector<ModelUnit> model_units(const std::shared_ptr<torch::nn::Module>& model);

// Bytes of a tensor's elements (also of a meta tensor, which has none yet).
inline uint64_t tensor_bytes(const at::Tensor& tensor) {
  return static_cast<uint64_t>(tensor.numel()) * static_cast<uint64_t>(tensor.element_size());
}

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/module_units.ipp>
#endif
