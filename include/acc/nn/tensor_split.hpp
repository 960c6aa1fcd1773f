// What a layer split across ranks (tensor parallelism) tells the code that holds its tensors without
// knowing how it computes: how each tensor is cut, over which group, and a gather of the pieces. A
// strategy that shards or averages the tensors over the other ranks (FSDP over a mesh's dp ranks)
// and a checkpoint that saves them whole read it; acc::tp's splits (include/acc/tp/splits.hpp)
// implement it beside the communication they install around the layer.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace acc::nn {

// How a split layer's weight is cut over its group.
struct ShardLayout {
  int64_t dim = 0;          // 0: rows (out_features, the vocabulary); 1: columns (in_features)
  int64_t parts = 1;        // equal blocks along `dim`, each cut on its own (a fused q, k, v: 3)
  bool bias_split = false;  // the bias is cut as the weight's rows; else it is whole on every rank
};

class TensorSplit {
 public:
  virtual ~TensorSplit() = default;
  virtual const ShardLayout& layout() const = 0;
  // This rank's place in the group the layer is split over, and the group's size.
  virtual int group_rank() const = 0;
  virtual int group_size() const = 0;
  // Every rank's `local`, in rank order: a collective over the group (checkpoints, not the step).
  virtual std::vector<at::Tensor> all_gather(const at::Tensor& local) = 0;
  // Whether the layer's input or output is each rank's slice of the sequence (sequence
  // parallelism): the whole parameters beside it then sum their gradients over the group by hooks
  // on the parameter tensors.
  virtual bool sequence_parallel() const = 0;
};

}  // namespace acc::nn
