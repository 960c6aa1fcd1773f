// The GPT of the big_model_inference example (and of bench/big_inference.cpp, in larger sizes):
// pre-norm blocks declared as acc::Unit (so that a device map can place them apart), learned
// positions, fused attention where libtorch has it, and a KV cache for decoding. The names of its
// tensors (tokens.weight, blocks.0.qkv.weight, ...) are those of bench/py/big_inference_accelerate.py's
// model, so either side reads the other's checkpoint.
#pragma once

#include <acc/detail/torch_compat.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/unit.hpp>

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linear.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <string>
#include <vector>

namespace big_model {

struct GptConfig {
  int64_t vocab = 256, dim = 64, heads = 4, layers = 8, context = 64;
};

// One block's keys and values of the tokens so far, (batch, heads, tokens, head dim), on the
// device the block runs on: passed to the block by pointer, so that a unit's call (which moves
// tensor arguments to the unit's device) leaves it where it is.
struct LayerCache {
  at::Tensor keys, values;
};

// The KV cache of a whole model: decoding a token attends to the cached keys and values instead
// of running the whole sequence again.
struct KvCache {
  explicit KvCache(const GptConfig& config) : layers(static_cast<std::size_t>(config.layers)) {}
  std::vector<LayerCache> layers;
  int64_t length = 0;  // tokens cached
};

// ATen's linear fuses the bias into the matrix product (libtorch's Linear on a 3-D input adds it
// after, as a second kernel), as Python's nn.Linear does.
inline at::Tensor dense(const torch::nn::Linear& layer, const at::Tensor& x) {
  return at::linear(x, layer->weight, layer->bias);
}

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const GptConfig& c)
      : torch::nn::Module("Block"),  // the class name no_split names
        heads(c.heads),
        ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        qkv(register_module("qkv", torch::nn::Linear(c.dim, 3 * c.dim))),
        proj(register_module("proj", torch::nn::Linear(c.dim, c.dim))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        fc(register_module("fc", torch::nn::Linear(c.dim, 4 * c.dim))),
        out(register_module("out", torch::nn::Linear(4 * c.dim, c.dim))) {}

  // Without a cache, causal attention over x; with one, x's tokens follow the cached ones, whose
  // keys and values it extends: the prompt first (an empty cache), then one token at a time.
  at::Tensor forward(at::Tensor x, LayerCache* cache = nullptr) {
    const auto b = x.size(0), t = x.size(1), d = x.size(2);
    const auto parts = dense(qkv, ln1(x)).split(d, 2);
    const auto as_heads = [&](const at::Tensor& part) { return part.view({b, t, heads, d / heads}).transpose(1, 2); };
    auto q = as_heads(parts[0]), k = as_heads(parts[1]), v = as_heads(parts[2]);
    const bool cached = cache && cache->keys.defined();
    if (cached) {
      if (t != 1)
        throw acc::Error("a block with cached keys takes one new token at a time, not " + std::to_string(t) +
                         ": give the whole prompt to an empty cache");
      k = at::cat({cache->keys, k}, 2);
      v = at::cat({cache->values, v}, 2);
    }
    if (cache) {
      cache->keys = k;
      cache->values = v;
    }
    // One new token sees every cached one: no mask.
    const auto y = cached ? acc::compat::attention(q, k, v) : acc::compat::causal_attention(q, k, v);
    x = x + dense(proj, y.transpose(1, 2).reshape({b, t, d}));
    return x + dense(out, torch::gelu(dense(fc, ln2(x))));
  }

  int64_t heads;
  torch::nn::LayerNorm ln1;
  torch::nn::Linear qkv, proj;
  torch::nn::LayerNorm ln2;
  torch::nn::Linear fc, out;
};
TORCH_MODULE(Block);

// The blocks are units; the embeddings, the final norm and the head are the model's own and stay
// on the execution device.
struct GptImpl : torch::nn::Module {
  explicit GptImpl(const GptConfig& c)
      : torch::nn::Module("Gpt"),
        context(c.context),
        tokens(register_module("tokens", torch::nn::Embedding(c.vocab, c.dim))),
        positions(register_module("positions", torch::nn::Embedding(c.context, c.dim))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        ln(register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        head(register_module("head", torch::nn::Linear(torch::nn::LinearOptions(c.dim, c.vocab).bias(false)))) {
    for (int64_t i = 0; i < c.layers; ++i) {
      units.emplace_back(Block(c));
      blocks->push_back(units.back());
    }
  }

  // Logits of every position of `ids`; with a cache, `ids` follow the cached tokens.
  at::Tensor forward(const at::Tensor& ids, KvCache* cache = nullptr) {
    const auto start = cache ? cache->length : 0;
    if (start + ids.size(1) > context)
      throw acc::Error(std::to_string(start + ids.size(1)) + " tokens exceed the model's context of " +
                       std::to_string(context) + ": generate fewer");
    auto x = tokens(ids) + positions(at::arange(start, start + ids.size(1), ids.options()));
    for (std::size_t i = 0; i < units.size(); ++i) x = units[i](x, cache ? &cache->layers[i] : nullptr);
    if (cache) cache->length += ids.size(1);
    return dense(head, ln(x));
  }

  int64_t context;
  torch::nn::Embedding tokens, positions;
  torch::nn::ModuleList blocks;
  std::vector<acc::Unit<Block>> units;
  torch::nn::LayerNorm ln;
  torch::nn::Linear head;
};
TORCH_MODULE(Gpt);

// Greedy decoding without a cache: each step runs the whole sequence again.
template <class Model>
at::Tensor generate(Model& model, at::Tensor ids, int64_t new_tokens) {
  for (int64_t i = 0; i < new_tokens; ++i) {
    const auto next = model(ids).select(1, -1).argmax(-1, /*keepdim=*/true);
    ids = at::cat({ids, next}, 1);
  }
  return ids;
}

// Greedy decoding with a KV cache: the prompt once, then each new token alone. `on_token` is
// called with each token chosen (e.g. to time the first).
template <class Model, class OnToken>
at::Tensor generate_cached(Model& model, const GptConfig& config, at::Tensor ids, int64_t new_tokens,
                           OnToken&& on_token) {
  KvCache cache(config);
  auto logits = model(ids, &cache);
  std::vector<at::Tensor> generated{ids};
  for (int64_t i = 0; i < new_tokens; ++i) {
    const auto next = logits.select(1, -1).argmax(-1, /*keepdim=*/true);
    on_token(next);
    generated.push_back(next);
    if (i + 1 < new_tokens) logits = model(next, &cache);
  }
  return at::cat(generated, 1);
}

template <class Model>
at::Tensor generate_cached(Model& model, const GptConfig& config, at::Tensor ids, int64_t new_tokens) {
  return generate_cached(model, config, std::move(ids), new_tokens, [](const at::Tensor&) {});
}

}  // namespace big_model
