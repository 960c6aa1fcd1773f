// How acc::FP8 trains: the fp8 formats, how scales are chosen, and which Linear layers stay in
// bf16 (Accelerate's FP8RecipeKwargs and fp8_config, as libtorch-style options).
#pragma once

#include <acc/nn/linear.hpp>

#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <string>

namespace acc {

struct FP8Recipe {
  // hybrid: e4m3 (more precision) for inputs and weights, e5m2 (more range) for gradients;
  // e4m3: e4m3 everywhere. (fp8_config's fp8_format: HYBRID, E4M3.)
  enum class Format { hybrid, e4m3 };
  // tensorwise: each cast takes its scale from the tensor's amax now (torchao's dynamic
  // scaling; two passes over the tensor). delayed: from the amaxes of earlier steps
  // (TransformerEngine's recipe; one pass, the amax is recorded while casting).
  enum class Scaling { tensorwise, delayed };
  // What delayed scaling takes from the history: its largest amax, or the newest.
  enum class AmaxAlgorithm { max, most_recent };

  TORCH_ARG(Format, format) = Format::hybrid;
  TORCH_ARG(Scaling, scaling) = Scaling::tensorwise;
  // Delayed scaling only: steps of amax history, what is taken from it, and a margin: scales are
  // divided by 2^margin for headroom. (fp8_config's amax_history_len, amax_compute_algorithm, margin.)
  TORCH_ARG(int64_t, amax_history_len) = 1024;
  TORCH_ARG(AmaxAlgorithm, amax_compute_algorithm) = AmaxAlgorithm::most_recent;
  TORCH_ARG(int64_t, margin) = 0;
  // The first and last Linear of the model stay in bf16 (the layers that see the embedding and
  // produce the logits are the most sensitive to fp8's precision).
  TORCH_ARG(bool, keep_first_and_last_in_bf16) = true;
  // Further choice: a layer (by its name in the model) runs in fp8 only where this returns true.
  // Layers whose dimensions are not multiples of 16 always stay in bf16 (_scaled_mm's requirement).
  using Filter = std::function<bool(const std::string& name, const nn::LinearImpl& layer)>;
  TORCH_ARG(Filter, filter) = nullptr;
};

}  // namespace acc
