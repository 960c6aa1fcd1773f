// acc::nn::Linear: a drop-in for torch::nn::Linear (the same LinearOptions, parameter names
// "weight" [out, in] and "bias" [out], initialisation and state dict, so checkpoints interchange)
// that the library can change the arithmetic of without the model's code changing:
//   - it always calls at::linear, which fuses the bias into the matrix multiply (torch::nn::Linear's
//     forward runs a 3-D input as matmul then a separate bias add);
//   - a precision policy may install its own matmul (acc::FP8 runs it in fp8, include/acc/fp8/);
//   - tensor parallelism may split the layer across ranks and install the communication around
//     the local product (include/acc/tp/).
// Both extensions are installed at prepare; a model only writes acc::nn::Linear where it would
// write torch::nn::Linear.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/nn/tensor_split.hpp>

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/options/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <ostream>

namespace acc::nn {

class LinearImpl;

// How a Linear computes input · weight^T + bias on the weights this rank holds. Installed by a
// precision policy (acc::FP8); without one, at::linear.
class LinearMatmul {
 public:
  virtual ~LinearMatmul() = default;
  // `bias` may be undefined.
  virtual at::Tensor operator()(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias) = 0;
};

// What surrounds the local product when the layer is split across ranks (tensor parallelism):
// it receives the layer and the input and returns the layer's output on this rank.
class LinearSplit : public TensorSplit {
 public:
  virtual at::Tensor forward(LinearImpl& layer, const at::Tensor& input) = 0;
};

class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features)
      : LinearImpl(torch::nn::LinearOptions(in_features, out_features)) {}
  explicit LinearImpl(const torch::nn::LinearOptions& options);

  // Registers weight and bias and initialises them as torch::nn::Linear does (the same values
  // from the same random state).
  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  at::Tensor forward(const at::Tensor& input);
  // input · weight^T + bias on this rank's weights, through the installed matmul; what a split
  // calls (it may pass an undefined bias, to add the bias after a reduction).
  at::Tensor local_forward(const at::Tensor& input, const at::Tensor& bias);

  // The installed pieces (null: none). Setting them is prepare's business: acc::FP8 and acc::tp.
  void set_matmul(std::shared_ptr<LinearMatmul> matmul) { matmul_ = std::move(matmul); }
  LinearMatmul* matmul() const { return matmul_.get(); }
  void set_split(std::shared_ptr<LinearSplit> split) { split_ = std::move(split); }
  LinearSplit* split() const { return split_.get(); }

  torch::nn::LinearOptions options;
  at::Tensor weight;
  at::Tensor bias;  // undefined when options.bias() is false

 private:
  std::shared_ptr<LinearMatmul> matmul_;
  std::shared_ptr<LinearSplit> split_;
};

TORCH_MODULE(Linear);

}  // namespace acc::nn

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/nn/impl/linear.ipp>
#endif
