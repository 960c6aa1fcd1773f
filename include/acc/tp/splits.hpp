// The splits tensor parallelism installs in acc::nn layers (Megatron-LM's parallel layers): what
// surrounds each rank's local product. acc::tp::parallelize shards the weights and installs them.
//   ColumnParallel: the weight's rows (out_features) are split; the input is whole on every rank,
//                   the output is this rank's slice of the features (or gathered: all of them).
//   RowParallel:    the weight's columns (in_features) are split; the input is this rank's slice
//                   (a column-parallel layer's output), the partial products are summed across
//                   ranks, then the bias (whole on every rank) is added once.
//   VocabParallel:  an embedding's rows (the vocabulary) are split; each rank looks up the indices
//                   it holds, zeros elsewhere, and the sum across ranks is every row.
#pragma once

#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/tp/regions.hpp>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace acc::tp {

// How a split layer's weight is cut over the tp group: what acc::tp::full_state joins and
// acc::tp::load_full_state cuts again (tp/full_state.hpp).
struct ShardLayout {
  int64_t dim = 0;          // 0: rows (out_features, the vocabulary); 1: columns (in_features)
  int64_t parts = 1;        // equal blocks along `dim`, each cut on its own (a fused q, k, v: 3)
  bool bias_split = false;  // the bias is cut as the weight's rows; else it is whole on every rank
};

// What every split below is, beside its LinearSplit or EmbeddingSplit.
class Sharded {
 public:
  explicit Sharded(const ShardLayout& layout) : layout_(layout) {}
  virtual ~Sharded() = default;
  const ShardLayout& layout() const { return layout_; }

 private:
  ShardLayout layout_;
};

template <class Comm>
class ColumnParallel final : public nn::LinearSplit, public Sharded {
 public:
  // `parts`: fused blocks of out_features (Style::fused).
  ColumnParallel(Comm& comm, bool gather_output, int64_t parts = 1)
      : Sharded({0, parts, true}), comm_(comm), gather_output_(gather_output) {}

  at::Tensor forward(nn::LinearImpl& layer, const at::Tensor& input) override {
    auto output = layer.local_forward(copy_to_region(input, comm_), layer.bias);
    return gather_output_ ? gather_from_region(output, comm_) : output;
  }

 private:
  Comm& comm_;
  bool gather_output_;
};

template <class Comm>
class RowParallel final : public nn::LinearSplit, public Sharded {
 public:
  RowParallel(Comm& comm, bool split_input) : Sharded({1, 1, false}), comm_(comm), split_input_(split_input) {}

  at::Tensor forward(nn::LinearImpl& layer, const at::Tensor& input) override {
    const auto local_input = split_input_ ? scatter_to_region(input, comm_) : input;
    auto output = reduce_from_region(layer.local_forward(local_input, at::Tensor()), comm_);
    return layer.bias.defined() ? output + layer.bias : output;
  }

 private:
  Comm& comm_;
  bool split_input_;
};

template <class Comm>
class VocabParallel final : public nn::EmbeddingSplit, public Sharded {
 public:
  explicit VocabParallel(Comm& comm) : Sharded({0, 1, false}), comm_(comm) {}

  // The layer holds rows [rank * rows, (rank + 1) * rows) of the table; its padding_idx, if any, is
  // local.
  at::Tensor forward(nn::EmbeddingImpl& layer, const at::Tensor& indices) override {
    const int64_t rows = layer.weight.size(0);
    const int64_t first = comm_.rank() * rows;
    const auto elsewhere = indices.lt(first).logical_or(indices.ge(first + rows));
    const auto local = (indices - first).masked_fill(elsewhere, 0);
    const auto found = layer.local_forward(local, layer.options.padding_idx()).masked_fill(elsewhere.unsqueeze(-1), 0);
    return reduce_from_region(found, comm_);
  }

 private:
  Comm& comm_;
};

}  // namespace acc::tp
