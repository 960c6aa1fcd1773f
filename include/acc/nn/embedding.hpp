// acc::nn::Embedding: a drop-in for torch::nn::Embedding (the same EmbeddingOptions, parameter
// name "weight" [num_embeddings, embedding_dim], initialisation and state dict) that tensor
// parallelism can split across ranks without the model's code changing: a vocabulary-parallel
// split (include/acc/tp/) gives each rank a range of the rows and installs the communication around
// the local lookup at prepare. A model writes acc::nn::Embedding where it would write
// torch::nn::Embedding.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/nn/tensor_split.hpp>

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/options/embedding.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <ostream>

namespace acc::nn {

class EmbeddingImpl;

// What surrounds the local lookup when the table is split across ranks (tensor parallelism): it
// receives the layer and the indices and returns the embeddings on this rank.
class EmbeddingSplit : public TensorSplit {
 public:
  virtual at::Tensor forward(EmbeddingImpl& layer, const at::Tensor& indices) = 0;
};

class EmbeddingImpl : public torch::nn::Cloneable<EmbeddingImpl> {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
      : EmbeddingImpl(torch::nn::EmbeddingOptions(num_embeddings, embedding_dim)) {}
  explicit EmbeddingImpl(const torch::nn::EmbeddingOptions& options);

  // Registers the weight (options._weight() when given) and initialises it as
  // torch::nn::Embedding does: N(0, 1), the padding row zero.
  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  at::Tensor forward(const at::Tensor& indices);
  // The rows `indices` of this rank's weight; `padding_idx` (a row of this rank's weight, or none)
  // gets no gradient. What a split calls.
  at::Tensor local_forward(const at::Tensor& indices, c10::optional<int64_t> padding_idx);

  // The installed split (null: none). Setting it is prepare's business: acc::tp.
  void set_split(std::shared_ptr<EmbeddingSplit> split) { split_ = std::move(split); }
  EmbeddingSplit* split() const { return split_.get(); }

  torch::nn::EmbeddingOptions options;
  at::Tensor weight;

 private:
  std::shared_ptr<EmbeddingSplit> split_;
};

TORCH_MODULE(Embedding);

}  // namespace acc::nn

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/nn/impl/embedding.ipp>
#endif
