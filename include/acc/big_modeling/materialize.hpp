// Giving a module built empty (acc::init_empty_weights) real storage: acc::materialize(module,
// device) gives every meta parameter and buffer zeroed storage on the device, keeping the tensor
// itself. That matters in C++ more than in Python: a module holds its parameters as members
// (Linear::weight) besides its registry, and an optimizer holds them too, so a parameter replaced
// by a new tensor would leave those pointing at the empty one. Here the tensor object (its
// TensorImpl) stays and takes the new storage, so every holder sees it.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace acc {

// The names of the module's parameters and buffers that are on the meta device.
ACC_DECL std::vector<std::string> meta_tensor_names(const torch::nn::Module& module);

inline bool has_meta_tensors(const torch::nn::Module& module) { return !meta_tensor_names(module).empty(); }

// Every meta parameter and buffer of the module gets zeroed storage on `device`, in its dtype and
// shape; the tensors stay the same objects (requires_grad and all). Tensors with storage are left
// as they are.
ACC_DECL void materialize(torch::nn::Module& module, c10::Device device);

namespace detail {

// Makes `target` (the same tensor object) take `value`'s storage, shape, dtype and device, also
// where Tensor::set_data refuses: between the meta device and a real one (set_data only swaps
// between dense backends, and in libtorch Meta is not one). A gradient accumulator made for the old
// device is dropped, as set_data drops it, so that backward makes one for the new.
ACC_DECL void assign_in_place(const at::Tensor& target, const at::Tensor& value);

}  // namespace detail
}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/big_modeling/impl/materialize.ipp>
#endif
