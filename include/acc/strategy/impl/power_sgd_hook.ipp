// The non-template part of the PowerSGD hooks (strategy/power_sgd_hook.hpp).
#pragma once

#include <acc/error.hpp>
#include <acc/strategy/power_sgd_hook.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace acc::detail {

// Matrices of the given (rows, columns) shapes, one after the other in `memory`.
inline std::vector<at::Tensor> matrix_views(const at::Tensor& memory,
                                            const std::vector<std::pair<int64_t, int64_t>>& shapes) {
  std::vector<at::Tensor> views;
  int64_t offset = 0;
  for (const auto& [rows, columns] : shapes) {
    views.push_back(memory.narrow(0, offset, rows * columns).view({rows, columns}));
    offset += rows * columns;
  }
  return views;
}

inline int64_t total_elements(const std::vector<std::pair<int64_t, int64_t>>& shapes) {
  int64_t total = 0;
  for (const auto& [rows, columns] : shapes) total += rows * columns;
  return total;
}

// A seed for one bucket's random factors in one round: the same on every rank, different for
// every bucket and round (SplitMix64's finalizer over the three).
inline uint64_t round_seed(uint64_t seed, std::size_t bucket, int64_t round) {
  uint64_t z = seed ^ (static_cast<uint64_t>(bucket) * 0x9E3779B97F4A7C15ULL) ^
               (static_cast<uint64_t>(round) * 0xD1B54A32D192ED03ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

ACC_DECL PowerSGDOptions checked_power_sgd_options(const PowerSGDOptions& options) {
  if (options.matrix_approximation_rank() < 1)
    throw Error("PowerSGDOptions().matrix_approximation_rank(" + std::to_string(options.matrix_approximation_rank()) +
                "): the rank must be at least 1 (the config's acc.power_sgd_rank)");
  if (options.start_iter() < 0)
    throw Error("PowerSGDOptions().start_iter(" + std::to_string(options.start_iter()) +
                "): the steps before compression must be 0 or more (the config's acc.power_sgd_start_iter)");
  if (!(options.min_compression_rate() >= 0))
    throw Error("PowerSGDOptions().min_compression_rate(" + std::to_string(options.min_compression_rate()) +
                "): it must be 0 or more (the config's acc.power_sgd_min_compression_rate)");
  if (!(options.orthogonalization_epsilon() >= 0))
    throw Error("PowerSGDOptions().orthogonalization_epsilon(" + std::to_string(options.orthogonalization_epsilon()) +
                "): it must be 0 or more");
  return options;
}

ACC_DECL void plan_low_rank(LowRankBucket& state, const GradBucket& bucket, const PowerSGDOptions& options,
                            bool batched) {
  const auto rank_limit = options.matrix_approximation_rank();
  std::vector<std::pair<int64_t, int64_t>> p_shapes, q_shapes, matrix_shapes;
  const auto add_matrix = [&](const at::Tensor& matrix) {
    const auto rows = matrix.size(0), columns = matrix.size(1);
    const auto rank = std::min({rows, columns, rank_limit});
    state.matrices.push_back(matrix);
    p_shapes.emplace_back(rows, rank);
    q_shapes.emplace_back(columns, rank);
    matrix_shapes.emplace_back(rows, columns);
  };
  if (batched) {
    const auto numel = bucket.buffer.numel();
    auto side = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(numel))));
    while (side * side < numel) ++side;  // sqrt's rounding
    state.square = at::zeros({side * side}, bucket.buffer.options());
    add_matrix(state.square.view({side, side}));
  } else {
    for (const auto& gradient : bucket.gradients) {
      if (gradient.dim() < 2) {
        state.uncompressed.push_back(gradient);
        continue;
      }
      const auto rows = gradient.size(0), columns = gradient.numel() / std::max<int64_t>(rows, 1);
      const auto rank = std::min({rows, columns, rank_limit});
      const bool worth_it = static_cast<double>((rows + columns) * rank) * options.min_compression_rate() <
                            static_cast<double>(rows * columns);
      if (worth_it)
        add_matrix(gradient.view({rows, columns}));
      else
        state.uncompressed.push_back(gradient);
    }
  }
  const auto options_of = bucket.buffer.options();
  state.p = at::zeros({total_elements(p_shapes)}, options_of);
  state.q = at::zeros({total_elements(q_shapes)}, options_of);
  state.ps = matrix_views(state.p, p_shapes);
  state.qs = matrix_views(state.q, q_shapes);
  if (options.use_error_feedback()) {
    state.error = at::zeros({total_elements(matrix_shapes)}, options_of);
    state.errors = matrix_views(state.error, matrix_shapes);
  }
  state.planned = true;
}

ACC_DECL void orthogonalize_columns(const at::Tensor& matrix, double epsilon) {
  const auto columns = matrix.size(1);
  for (int64_t i = 0; i < columns; ++i) {
    auto column = matrix.narrow(1, i, 1);
    const auto norm = column.norm();
    column.div_(epsilon > 0 ? norm.add(epsilon) : norm.masked_fill(norm.eq(0), 1));
    if (i + 1 < columns) {
      auto rest = matrix.narrow(1, i + 1, columns - i - 1);
      rest.sub_(column.mul(rest).sum(0, /*keepdim=*/true).mul(column));
    }
  }
}

ACC_DECL void begin_low_rank_round(LowRankBucket& state, const GradBucket& bucket, const PowerSGDOptions& options) {
  if (state.square.defined()) {
    const auto numel = bucket.buffer.numel();
    state.square.narrow(0, 0, numel).copy_(bucket.buffer);
    state.square.narrow(0, numel, state.square.numel() - numel).zero_();
  }
  for (std::size_t i = 0; i < state.errors.size(); ++i) {
    state.matrices[i].add_(state.errors[i]);
    state.errors[i].copy_(state.matrices[i]);  // the input, until end_low_rank_round subtracts its approximation
  }
  if (!options.warm_start() || !state.has_factors) {
    // Drawn on the CPU from a seed all ranks share, so that every rank starts from the same Q.
    auto generator =
        at::make_generator<at::CPUGeneratorImpl>(round_seed(options.random_seed(), bucket.index, state.rounds));
    state.q.copy_(at::randn({state.q.numel()}, generator, at::TensorOptions().dtype(state.q.scalar_type())));
    state.has_factors = true;
  }
  for (std::size_t i = 0; i < state.matrices.size(); ++i) {
    orthogonalize_columns(state.qs[i], options.orthogonalization_epsilon());
    at::mm_out(state.ps[i], state.matrices[i], state.qs[i]);
  }
  if (state.uncompressed.empty()) return;
  std::vector<at::Tensor> flat;
  for (const auto& gradient : state.uncompressed) flat.push_back(gradient.reshape({-1}));
  state.uncompressed_flat = at::cat(flat);
}

ACC_DECL void project_low_rank(LowRankBucket& state, const PowerSGDOptions& options) {
  for (std::size_t i = 0; i < state.matrices.size(); ++i) {
    orthogonalize_columns(state.ps[i], options.orthogonalization_epsilon());
    at::mm_out(state.qs[i], state.matrices[i].t(), state.ps[i]);
  }
}

ACC_DECL void end_low_rank_round(LowRankBucket& state, const GradBucket& bucket) {
  for (std::size_t i = 0; i < state.matrices.size(); ++i) {
    at::mm_out(state.matrices[i], state.ps[i], state.qs[i].t());
    if (!state.errors.empty()) state.errors[i].sub_(state.matrices[i]);
  }
  if (state.square.defined()) bucket.buffer.copy_(state.square.narrow(0, 0, bucket.buffer.numel()));
  int64_t offset = 0;
  for (const auto& gradient : state.uncompressed) {
    gradient.copy_(state.uncompressed_flat.narrow(0, offset, gradient.numel()).view(gradient.sizes()));
    offset += gradient.numel();
  }
}

}  // namespace acc::detail
