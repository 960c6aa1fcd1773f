// The splits tensor parallelism installs in acc::nn layers (Megatron-LM's parallel layers): what
// surrounds each rank's local product. acc::tp::parallelize shards the weights and installs them.
//   ColumnParallel: the weight's rows (out_features) are split; the input is whole on every rank,
//                   the output is this rank's slice of the features (or gathered: all of them).
//   RowParallel:    the weight's columns (in_features) are split; the input is this rank's slice
//                   (a column-parallel layer's output), the partial products are summed across
//                   ranks, then the bias (whole on every rank) is added once.
//   VocabParallel:  an embedding's rows (the vocabulary) are split; each rank looks up the indices
//                   it holds, zeros elsewhere, and the sum across ranks is every row.
// Under sequence parallelism (regions.hpp) a column-parallel layer's input is this rank's slice of
// the sequence, gathered first; a row-parallel layer's and an embedding's output is the sum's slice
// of the sequence (reduce-scattered), a row-parallel bias added to that slice.
#pragma once

#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/tp/regions.hpp>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace acc::tp {

// What every split below tells the code that holds the layer's tensors (nn::TensorSplit): its cut,
// its group, `comm`, and whether it runs on the sequence's slices.
template <class Split, class Comm>
class SplitOver : public Split {
 public:
  SplitOver(Comm& comm, const nn::ShardLayout& layout, bool sequence_parallel)
      : comm_(comm), layout_(layout), sequence_parallel_(sequence_parallel) {}
  const nn::ShardLayout& layout() const final { return layout_; }
  int group_rank() const final { return comm_.rank(); }
  int group_size() const final { return comm_.world_size(); }
  std::vector<at::Tensor> all_gather(const at::Tensor& local) final { return comm_.all_gather(local.contiguous()); }
  bool sequence_parallel() const final { return sequence_parallel_; }

 protected:
  Comm& comm_;

 private:
  nn::ShardLayout layout_;
  bool sequence_parallel_;
};

template <class Comm>
class ColumnParallel final : public SplitOver<nn::LinearSplit, Comm> {
 public:
  // `parts`: fused blocks of out_features (Style::fused).
  ColumnParallel(Comm& comm, bool gather_output, int64_t parts, bool sequence_parallel)
      : SplitOver<nn::LinearSplit, Comm>(comm, {0, parts, true}, sequence_parallel), gather_output_(gather_output) {}

  at::Tensor forward(nn::LinearImpl& layer, const at::Tensor& input) override {
    const auto whole_input =
        this->sequence_parallel() ? gather_from_sequence(input, this->comm_) : copy_to_region(input, this->comm_);
    auto output = layer.local_forward(whole_input, layer.bias);
    return gather_output_ ? gather_from_region(output, this->comm_) : output;
  }

 private:
  bool gather_output_;
};

template <class Comm>
class RowParallel final : public SplitOver<nn::LinearSplit, Comm> {
 public:
  RowParallel(Comm& comm, bool split_input, bool sequence_parallel)
      : SplitOver<nn::LinearSplit, Comm>(comm, {1, 1, false}, sequence_parallel), split_input_(split_input) {}

  at::Tensor forward(nn::LinearImpl& layer, const at::Tensor& input) override {
    const auto local_input = split_input_ ? scatter_to_region(input, this->comm_) : input;
    const auto partial = layer.local_forward(local_input, at::Tensor());
    auto output = this->sequence_parallel() ? reduce_scatter_to_sequence(partial, this->comm_)
                                            : reduce_from_region(partial, this->comm_);
    return layer.bias.defined() ? output + layer.bias : output;
  }

 private:
  bool split_input_;
};

template <class Comm>
class VocabParallel final : public SplitOver<nn::EmbeddingSplit, Comm> {
 public:
  VocabParallel(Comm& comm, bool sequence_parallel)
      : SplitOver<nn::EmbeddingSplit, Comm>(comm, {0, 1, false}, sequence_parallel) {}

  // The layer holds rows [rank * rows, (rank + 1) * rows) of the table; its padding_idx, if any, is
  // local.
  at::Tensor forward(nn::EmbeddingImpl& layer, const at::Tensor& indices) override {
    const int64_t rows = layer.weight.size(0);
    const int64_t first = this->comm_.rank() * rows;
    const auto elsewhere = indices.lt(first).logical_or(indices.ge(first + rows));
    const auto local = (indices - first).masked_fill(elsewhere, 0);
    const auto found = layer.local_forward(local, layer.options.padding_idx()).masked_fill(elsewhere.unsqueeze(-1), 0);
    return this->sequence_parallel() ? reduce_scatter_to_sequence(found, this->comm_)
                                     : reduce_from_region(found, this->comm_);
  }
};

}  // namespace acc::tp
