// Bodies of include/acc/tp/parallelize.hpp.
#pragma once

#include <acc/error.hpp>
#include <acc/nn/split_layers.hpp>
#include <acc/tp/parallelize.hpp>

#include <ATen/core/grad_mode.h>

#include <string>
#include <vector>

namespace acc::tp::detail {

ACC_DECL bool name_matches(std::string_view pattern, std::string_view name) {
  // Iterative glob: on a mismatch, let the last `*` swallow one more character.
  std::size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

ACC_DECL std::vector<PlannedLayer> planned_layers(torch::nn::Module& module, const Plan& plan) {
  std::vector<PlannedLayer> layers;
  std::vector<std::string> all_names;
  std::vector<bool> used(plan.size(), false);
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    all_names.push_back(item.key());
    std::size_t matched = plan.size();
    for (std::size_t i = 0; i < plan.size(); ++i) {
      if (!name_matches(plan[i].first, item.key())) continue;
      if (matched != plan.size())
        throw Error("acc::tp::parallelize: the module '" + item.key() + "' matches the plan's patterns '" +
                    plan[matched].first + "' and '" + plan[i].first + "'; make the patterns name each layer once");
      matched = i;
    }
    if (matched == plan.size()) continue;
    used[matched] = true;
    const auto& layer = item.value();
    const Style& style = plan[matched].second;
    if (style.kind() == Style::Kind::sequence) {
      if (style.gathers_output() || style.splits_input() || style.fused_parts() != 1 || style.head_count() != 0)
        throw Error("acc::tp::parallelize: '" + item.key() +
                    "' is sequence_parallel, whose parameters stay whole: give it plain acc::tp::sequence_parallel");
      layers.push_back({item.key(), layer, style});
      continue;
    }
    const auto* linear = dynamic_cast<nn::LinearImpl*>(layer.get());
    const auto* embedding = dynamic_cast<nn::EmbeddingImpl*>(layer.get());
    if (!linear && !embedding)
      throw Error("acc::tp::parallelize: the plan's pattern '" + plan[matched].first + "' matches '" + item.key() +
                  "', a " + layer->name() +
                  ", which tensor parallelism cannot split; only acc::nn::Linear and acc::nn::Embedding are split: "
                  "write them in the model where it has torch::nn::Linear or torch::nn::Embedding, or narrow the "
                  "pattern");
    const bool already_split = linear ? linear->split() != nullptr : embedding->split() != nullptr;
    if (already_split)
      throw Error("acc::tp::parallelize: '" + item.key() + "' is split already; parallelize a model once");
    layers.push_back({item.key(), layer, style});
  }
  for (std::size_t i = 0; i < plan.size(); ++i) {
    if (used[i]) continue;
    std::string names;
    for (const auto& name : all_names) names += (names.empty() ? "" : ", ") + name;
    throw Error("acc::tp::parallelize: the plan's pattern '" + plan[i].first +
                "' matches no module of the model (its modules: " + names +
                "); patterns match whole names, `*` any characters");
  }
  return layers;
}

namespace {

// Keeps this rank's slice (nn::slice_of); set_data keeps the tensor object (optimizers and holders see it).
void keep_slice(at::Tensor& parameter, int64_t dim, int64_t parts, int rank, int ranks) {
  if (!parameter.defined()) return;
  at::NoGradGuard no_grad;
  parameter.set_data(nn::slice_of(parameter.detach(), dim, parts, rank, ranks).clone());
  parameter.mutable_grad() = at::Tensor();
}

[[noreturn]] void indivisible(const std::string& name, const std::string& what, int64_t size, int ranks) {
  throw Error("acc::tp::parallelize: '" + name + "' has " + what + " " + std::to_string(size) +
              ", which does not split over the " + std::to_string(ranks) +
              " tensor-parallel ranks; make it a multiple of the tensor-parallel size (parallelism_config_tp_size)");
}

}  // namespace

ACC_DECL void shard(const std::string& name, nn::LinearImpl& layer, const Style& style, int rank, int ranks) {
  const int64_t parts = style.fused_parts();
  if (style.kind() == Style::Kind::rowwise) {
    if (style.gathers_output() || parts != 1 || style.head_count() != 0)
      throw Error("acc::tp::parallelize: '" + name +
                  "' is rowwise, whose output is whole: gather_output, fused and heads are colwise settings");
    const int64_t in = layer.options.in_features();
    if (in % ranks != 0) indivisible(name, "in_features", in, ranks);
    keep_slice(layer.weight, 1, 1, rank, ranks);
    layer.options.in_features(in / ranks);
    return;
  }
  if (style.splits_input())
    throw Error("acc::tp::parallelize: '" + name +
                "' is colwise, whose input is whole: split_input is a rowwise setting");
  const int64_t out = layer.options.out_features();
  if (parts < 1 || out % parts != 0)
    throw Error("acc::tp::parallelize: '" + name + "' has out_features " + std::to_string(out) + ", not " +
                std::to_string(parts) + " equal fused parts; give fused() the number of blocks its output holds");
  if (parts > 1 && style.gathers_output())
    throw Error("acc::tp::parallelize: '" + name +
                "' is fused, and gathering its output would interleave the parts of each rank; leave its output "
                "split (the attention that follows runs on this rank's heads)");
  if (const int64_t heads = style.head_count(); heads != 0 && (heads % ranks != 0 || (out / parts) % heads != 0))
    throw Error("acc::tp::parallelize: '" + name + "' holds " + std::to_string(heads) + " attention heads per part (" +
                std::to_string(out / parts) + " features), which do not split into whole heads over the " +
                std::to_string(ranks) +
                " tensor-parallel ranks; make the head count a multiple of the "
                "tensor-parallel size (parallelism_config_tp_size)");
  if ((out / parts) % ranks != 0) indivisible(name, parts > 1 ? "fused parts of" : "out_features", out / parts, ranks);
  keep_slice(layer.weight, 0, parts, rank, ranks);
  keep_slice(layer.bias, 0, parts, rank, ranks);
  layer.options.out_features(out / ranks);
}

ACC_DECL void shard(const std::string& name, nn::EmbeddingImpl& layer, const Style& style, int rank, int ranks) {
  if (style.kind() == Style::Kind::colwise)
    throw Error("acc::tp::parallelize: '" + name +
                "' is an embedding, which is split by its vocabulary: use acc::tp::rowwise (colwise, splitting "
                "embedding_dim, is not supported)");
  if (style.gathers_output() || style.splits_input() || style.fused_parts() != 1 || style.head_count() != 0)
    throw Error("acc::tp::parallelize: '" + name +
                "' is an embedding: give it plain acc::tp::rowwise (or rowwise.sequence_parallel())");
  if (layer.options.max_norm() || layer.options.scale_grad_by_freq())
    throw Error("acc::tp::parallelize: '" + name +
                "' has max_norm or scale_grad_by_freq, which a vocabulary-parallel embedding does not support "
                "(each rank sees only its rows); drop them or leave the embedding whole");
  const int64_t vocabulary = layer.options.num_embeddings();
  if (vocabulary % ranks != 0) indivisible(name, "num_embeddings", vocabulary, ranks);
  const int64_t rows = vocabulary / ranks;
  keep_slice(layer.weight, 0, 1, rank, ranks);
  layer.options.num_embeddings(rows);
  if (const auto padding = layer.options.padding_idx()) {
    const int64_t local = *padding - rank * rows;
    layer.options.padding_idx(local >= 0 && local < rows ? c10::optional<int64_t>(local) : c10::nullopt);
  }
}

}  // namespace acc::tp::detail
