// Bodies of include/acc/nn/embedding.hpp.
#pragma once

#include <acc/error.hpp>
#include <acc/nn/embedding.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <torch/nn/functional/embedding.h>
#include <torch/nn/init.h>

#include <string>

namespace acc::nn {

ACC_DECL EmbeddingImpl::EmbeddingImpl(const torch::nn::EmbeddingOptions& options_) : options(options_) { reset(); }

// The checks and order of torch::nn::Embedding's reset, so that the same random state gives the
// same weights.
ACC_DECL void EmbeddingImpl::reset() {
  const int64_t rows = options.num_embeddings();
  if (const auto padding = options.padding_idx()) {
    if (*padding >= rows || *padding < -rows)
      throw Error("acc::nn::Embedding: padding_idx " + std::to_string(*padding) + " is outside the " +
                  std::to_string(rows) + " embeddings; give one from " + std::to_string(-rows) + " to " +
                  std::to_string(rows - 1));
    if (*padding < 0) options.padding_idx(rows + *padding);
  }
  if (options._weight().defined()) {
    if (options._weight().sizes() != at::IntArrayRef{rows, options.embedding_dim()})
      throw Error("acc::nn::Embedding: the given _weight is " + std::to_string(options._weight().size(0)) + " x " +
                  std::to_string(options._weight().dim() > 1 ? options._weight().size(1) : 0) +
                  ", not num_embeddings " + std::to_string(rows) + " x embedding_dim " +
                  std::to_string(options.embedding_dim()));
    weight = register_parameter("weight", options._weight());
    return;
  }
  weight = register_parameter("weight", at::empty({rows, options.embedding_dim()}));
  reset_parameters();
}

ACC_DECL void EmbeddingImpl::reset_parameters() {
  torch::nn::init::normal_(weight);
  if (const auto padding = options.padding_idx()) {
    at::NoGradGuard no_grad;
    weight[*padding].fill_(0);
  }
}

ACC_DECL void EmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "acc::nn::Embedding(num_embeddings=" << options.num_embeddings()
         << ", embedding_dim=" << options.embedding_dim();
  if (const auto padding = options.padding_idx()) stream << ", padding_idx=" << *padding;
  stream << ")";
}

ACC_DECL at::Tensor EmbeddingImpl::forward(const at::Tensor& indices) {
  return split_ ? split_->forward(*this, indices) : local_forward(indices, options.padding_idx());
}

ACC_DECL at::Tensor EmbeddingImpl::local_forward(const at::Tensor& indices, c10::optional<int64_t> padding_idx) {
  auto lookup = torch::nn::functional::EmbeddingFuncOptions()
                    .norm_type(options.norm_type())
                    .scale_grad_by_freq(options.scale_grad_by_freq())
                    .sparse(options.sparse());
  if (padding_idx) lookup.padding_idx(*padding_idx);
  if (options.max_norm()) lookup.max_norm(*options.max_norm());
  return torch::nn::functional::embedding(indices, weight, lookup);
}

}  // namespace acc::nn
