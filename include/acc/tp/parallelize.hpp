// acc::tp::parallelize: a tensor-parallel plan declared in C++, the counterpart of PyTorch's
// parallelize_module(model, mesh, {"blocks.*.attn.qkv": ColwiseParallel(), ...}):
//
//   acc::tp::parallelize(*model, mesh, {{"tok", acc::tp::rowwise},
//                                       {"blocks.*.qkv", acc::tp::colwise.fused(3).heads(n_head)},
//                                       {"blocks.*.proj", acc::tp::rowwise},
//                                       {"head", acc::tp::colwise}});
//
// Every rank has built the same full model (the same seed, or rank 0's weights broadcast); each
// matched layer keeps this rank's slice of its weights, in place, and gets the split that adds the
// communication around its local product (splits.hpp). The parameters stay the same tensor
// objects, resized: an optimizer built before keeps them, but must not have stepped yet (its state
// would have the full shapes). Layers not matched stay whole on every rank (replicated).
//
// A layer's options then describe its local part (out_features, in_features, num_embeddings), so a
// model derives local sizes from them: an attention block computes its local head count as
// qkv->options.out_features() / 3 / head_dim. For that to be whole heads, a fused q, k, v
// projection is split part by part (fused(3): this rank's rows are its slice of q, of k and of v,
// in that order) and heads(n) checks that the n heads of each part split evenly.
//
// Sequence parallelism (Megatron-LM's; PyTorch's SequenceParallel with Shard(1) layouts): with
// sequence_parallel() on every split layer and acc::tp::sequence_parallel on the LayerNorms between
// them, the activations there are each rank's slice of the sequence ([batch, sequence / ranks,
// ...]), so that those layers hold 1/ranks of them; the LayerNorms' parameters (and the row-parallel
// biases) sum their gradients over the group. The model is unchanged as long as it takes the
// sequence length from a column-parallel layer's output (where the sequence is whole again) and
// looks positions up per token (pos(positions) with positions shaped as the ids), so that a
// position embedding split as rowwise.sequence_parallel() returns this rank's positions.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/mesh/device_mesh.hpp>
#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/tp/splits.hpp>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc::tp {

// How one layer is split (PyTorch's ColwiseParallel / RowwiseParallel).
class Style {
 public:
  enum class Kind { colwise, rowwise, sequence };
  constexpr explicit Style(Kind kind) : kind_(kind) {}

  // colwise: all-gather the output, so that every rank has every feature (PyTorch's
  // output_layouts=Replicate()). Otherwise the output stays split, for a rowwise layer or a
  // vocabulary-parallel loss.
  constexpr Style gather_output() const {
    return with([](Style& s) { s.gather_output_ = true; });
  }
  // rowwise: the input is whole on every rank (not a colwise layer's output): each takes its slice.
  constexpr Style split_input() const {
    return with([](Style& s) { s.split_input_ = true; });
  }
  // colwise: out_features are `parts` equal blocks (a fused q, k, v projection: 3), each split on
  // its own; the rank's rows are its slice of each block, in block order.
  constexpr Style fused(int64_t parts) const {
    return with([parts](Style& s) { s.fused_ = parts; });
  }
  // colwise: each block holds `count` attention heads, which must split evenly over the ranks.
  constexpr Style heads(int64_t count) const {
    return with([count](Style& s) { s.heads_ = count; });
  }
  // Sequence parallelism: colwise, the input is this rank's slice of the sequence (gathered
  // first); rowwise (Linear or Embedding), the output is (reduce-scattered along the sequence).
  constexpr Style sequence_parallel() const {
    return with([](Style& s) { s.sequence_ = true; });
  }

  constexpr Kind kind() const { return kind_; }
  constexpr bool gathers_output() const { return gather_output_; }
  constexpr bool splits_input() const { return split_input_; }
  constexpr int64_t fused_parts() const { return fused_; }
  constexpr int64_t head_count() const { return heads_; }  // 0: not given
  constexpr bool on_sequence_slices() const { return sequence_ || kind_ == Kind::sequence; }

 private:
  template <class Change>
  constexpr Style with(Change change) const {
    Style copy = *this;
    change(copy);
    return copy;
  }

  Kind kind_;
  bool gather_output_ = false;
  bool split_input_ = false;
  int64_t fused_ = 1;
  int64_t heads_ = 0;
  bool sequence_ = false;
};

// Linear: weight rows split (out_features). Embedding: not supported (use rowwise).
inline constexpr Style colwise{Style::Kind::colwise};
// Linear: weight columns split (in_features), partial products summed. Embedding: the vocabulary
// (rows) split, as PyTorch's RowwiseParallel splits an nn.Embedding.
inline constexpr Style rowwise{Style::Kind::rowwise};
// Any module whose parameters stay whole and see each rank's slice of the sequence (a LayerNorm
// between sequence-parallel layers): their gradients are summed over the group.
inline constexpr Style sequence_parallel{Style::Kind::sequence};

// Module-name patterns and their styles. A pattern matches a whole name of
// module.named_modules() ("blocks.0.qkv"); `*` matches any characters (dots too), `?` one.
using Plan = std::vector<std::pair<std::string, Style>>;

namespace detail {

ACC_DECL bool name_matches(std::string_view pattern, std::string_view name);

struct PlannedLayer {
  std::string name;
  std::shared_ptr<torch::nn::Module> module;
  Style style;
};
// The layers the plan names: an acc::Error for a pattern that matches nothing, a layer that two
// patterns match, or one that is not an acc::nn::Linear or acc::nn::Embedding, or is split already
// (but for sequence_parallel, which takes any module).
ACC_DECL std::vector<PlannedLayer> planned_layers(torch::nn::Module& module, const Plan& plan);

// Keep this rank's slice of each layer's weights, in place, and make its options the local sizes;
// an acc::Error naming the layer when the sizes do not split over `ranks`.
ACC_DECL void shard(const std::string& name, nn::LinearImpl& layer, const Style& style, int rank, int ranks);
ACC_DECL void shard(const std::string& name, nn::EmbeddingImpl& layer, const Style& style, int rank, int ranks);

}  // namespace detail

// Splits the layers `plan` names over the tensor-parallel group `comm` (every member calls it with
// the same model and plan). Returns the names of the split layers, in module order (not those of
// sequence_parallel modules, which stay whole).
template <class Comm>
std::vector<std::string> parallelize(torch::nn::Module& module, Comm& comm, const Plan& plan) {
  std::vector<std::string> split;
  for (auto& planned : detail::planned_layers(module, plan)) {
    const Style& style = planned.style;
    if (style.kind() == Style::Kind::sequence) {
      for (const auto& parameter : planned.module->parameters()) sum_gradient_over(parameter, comm);
      continue;
    }
    if (auto* linear = dynamic_cast<nn::LinearImpl*>(planned.module.get())) {
      detail::shard(planned.name, *linear, style, comm.rank(), comm.world_size());
      if (style.kind() == Style::Kind::colwise) {
        linear->set_split(std::make_shared<ColumnParallel<Comm>>(comm, style.gathers_output(), style.fused_parts(),
                                                                 style.on_sequence_slices()));
      } else {
        linear->set_split(std::make_shared<RowParallel<Comm>>(comm, style.splits_input(), style.on_sequence_slices()));
        // Added to this rank's slice of the sequence: a partial gradient on each rank.
        if (style.on_sequence_slices() && linear->bias.defined()) sum_gradient_over(linear->bias, comm);
      }
    } else {
      auto& embedding = dynamic_cast<nn::EmbeddingImpl&>(*planned.module);
      detail::shard(planned.name, embedding, style, comm.rank(), comm.world_size());
      embedding.set_split(std::make_shared<VocabParallel<Comm>>(comm, style.on_sequence_slices()));
    }
    split.push_back(std::move(planned.name));
  }
  return split;
}

// Over the mesh's tp dimension.
template <class Comm>
std::vector<std::string> parallelize(torch::nn::Module& module, DeviceMesh<Comm>& mesh, const Plan& plan) {
  return parallelize(module, mesh.tp(), plan);
}

}  // namespace acc::tp

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tp/impl/parallelize.ipp>
#endif
