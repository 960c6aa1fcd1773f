// The GPT-2-small-sized model of ../shared/DEVICE.md's baselines, for the GPU benchmarks: 12
// pre-norm blocks, d=768, 12 heads, vocabulary 32768, fused causal attention. bench/py/gpt.py is
// the same model in Python. Its layers are acc::nn::Linear: at::linear, which fuses the bias as
// Python's nn.Linear does (libtorch's torch::nn::Linear adds it in a kernel of its own), and the
// layers acc::FP8 runs in fp8.
#pragma once

#include <acc/detail/torch_compat.hpp>
#include <acc/fsdp/unit.hpp>

#include <acc/nn/linear.hpp>

#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <vector>

namespace bench {

struct GptConfig {
  int64_t layers = 12, dim = 768, heads = 12, vocab = 32768, seq = 512;
};

struct GptBlockImpl : torch::nn::Module {
  GptBlockImpl(const GptConfig& c)
      : heads(c.heads),
        ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        qkv(register_module("qkv", acc::nn::Linear(c.dim, 3 * c.dim))),
        proj(register_module("proj", acc::nn::Linear(c.dim, c.dim))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        fc(register_module("fc", acc::nn::Linear(c.dim, 4 * c.dim))),
        out(register_module("out", acc::nn::Linear(4 * c.dim, c.dim))) {}
  at::Tensor forward(at::Tensor x) {
    const auto b = x.size(0), t = x.size(1), d = x.size(2);
    // q, k and v as three slices of the projection, each viewed as heads: a step took 22.4 ms this
    // way and 24.5 ms with one permute of a (b, t, 3, h, d/h) view (Python, one H200, 2026-11-30).
    const auto parts = qkv(ln1(x)).split(d, 2);
    const auto as_heads = [&](const at::Tensor& part) { return part.view({b, t, heads, d / heads}).transpose(1, 2); };
    auto y = acc::compat::causal_attention(as_heads(parts[0]), as_heads(parts[1]), as_heads(parts[2]))
                 .transpose(1, 2)
                 .reshape({b, t, d});
    x = x + proj(y);
    return x + out(torch::gelu(fc(ln2(x))));
  }
  int64_t heads;
  torch::nn::LayerNorm ln1;
  acc::nn::Linear qkv, proj;
  torch::nn::LayerNorm ln2;
  acc::nn::Linear fc, out;
};
TORCH_MODULE(GptBlock);

struct GptImpl : torch::nn::Module {
  explicit GptImpl(const GptConfig& c)
      : tokens(register_module("tokens", torch::nn::Embedding(c.vocab, c.dim))),
        positions(register_module("positions", torch::nn::Embedding(c.seq, c.dim))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        ln(register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})))),
        head(register_module("head", acc::nn::Linear(torch::nn::LinearOptions(c.dim, c.vocab).bias(false)))) {
    // Each block is an FSDP unit (acc::Unit); the ModuleList gives the names Python's model has.
    for (int64_t i = 0; i < c.layers; ++i) {
      units.emplace_back(GptBlock(c));
      blocks->push_back(units.back());
    }
  }
  at::Tensor forward(const at::Tensor& ids) {
    auto x = tokens(ids) + positions(torch::arange(ids.size(1), ids.options()));
    for (auto& block : units) x = block(x);
    return head(ln(x));
  }
  torch::nn::Embedding tokens, positions;
  torch::nn::ModuleList blocks;
  std::vector<acc::Unit<GptBlock>> units;
  torch::nn::LayerNorm ln;
  acc::nn::Linear head;
};
TORCH_MODULE(Gpt);

}  // namespace bench
