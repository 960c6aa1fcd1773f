#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/acc.hpp>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Four acc::nn::Linear layers, one of them 20 wide (not a multiple of 16), and a torch::nn::Linear.
struct MixedLayersImpl : torch::nn::Module {
  acc::nn::Linear in{register_module("in", acc::nn::Linear(32, 64))};
  acc::nn::Linear up{register_module("up", acc::nn::Linear(64, 128))};
  acc::nn::Linear odd{register_module("odd", acc::nn::Linear(128, 20))};
  torch::nn::Linear plain{register_module("plain", torch::nn::Linear(20, 32))};
  acc::nn::Linear down{register_module("down", acc::nn::Linear(32, 32))};
  acc::nn::Linear out{register_module("out", acc::nn::Linear(32, 16))};
};
TORCH_MODULE(MixedLayers);

}  // namespace

TEST_CASE("acc::nn::Linear is torch::nn::Linear's drop-in: the same values from the same seed, outputs, state dict") {
  for (const bool bias : {true, false}) {
    CAPTURE(bias);
    torch::manual_seed(7);
    acc::nn::Linear ours(torch::nn::LinearOptions(12, 5).bias(bias));
    torch::manual_seed(7);
    torch::nn::Linear theirs(torch::nn::LinearOptions(12, 5).bias(bias));
    CHECK(at::equal(ours->weight, theirs->weight));
    CHECK(ours->bias.defined() == bias);
    if (bias) CHECK(at::equal(ours->bias, theirs->bias));
    const auto names = [](const torch::nn::Module& m) {
      std::vector<std::string> out;
      for (const auto& p : m.named_parameters()) out.push_back(p.key());
      return out;
    };
    CHECK(names(*ours) == names(*theirs));

    // at::linear fuses the bias where torch::nn::Linear adds it after the product: the same
    // products of the same fp32 values, summed in an order that may differ by one rounding of
    // each output (12 terms of magnitude < 1 here, so 1e-5 covers a few fp32 ulps of the sum).
    const auto x = at::randn({3, 4, 12});
    CHECK(at::allclose(ours(x), theirs(x), 0, 1e-5));

    // A checkpoint written by one loads into the other.
    torch::manual_seed(11);
    acc::nn::Linear other(torch::nn::LinearOptions(12, 5).bias(bias));
    std::stringstream stream;
    torch::save(other, stream);
    torch::load(theirs, stream);
    CHECK(at::equal(other->weight, theirs->weight));
    std::stringstream back;
    torch::save(theirs, back);
    torch::load(ours, back);
    CHECK(at::equal(other->weight, ours->weight));
  }
}

TEST_CASE("FP8's recipe puts the Linear layers in fp8 but the first, the last and those not a multiple of 16") {
  MixedLayers model;
  CHECK(acc::fp8::layers_in_fp8(*model, acc::FP8Recipe()) == std::vector<std::string>{"up", "down"});
  CHECK(acc::fp8::layers_in_fp8(*model, acc::FP8Recipe().keep_first_and_last_in_bf16(false)) ==
        std::vector<std::string>{"in", "up", "down", "out"});
  const auto only_up = [](const std::string& name, const acc::nn::LinearImpl&) { return name == "up"; };
  CHECK(acc::fp8::layers_in_fp8(*model, acc::FP8Recipe().filter(only_up)) == std::vector<std::string>{"up"});

  const auto installed = acc::fp8::convert_to_fp8(*model, acc::FP8Recipe());
  CHECK(installed == std::vector<std::string>{"up", "down"});
  CHECK(model->up->matmul() != nullptr);
  CHECK(model->down->matmul() != nullptr);
  CHECK(model->in->matmul() == nullptr);
  CHECK(model->odd->matmul() == nullptr);
  CHECK(error_of([&] {
          acc::fp8::convert_to_fp8(*model, acc::FP8Recipe().amax_history_len(0));
        }).find("amax_history_len") != std::string::npos);
  // Where fp8 cannot run (on the CPU), the installed matmul is at::linear's.
  const auto x = at::randn({4, 64});
  CHECK(at::equal(model->up(x), at::linear(x, model->up->weight, model->up->bias)));
}

TEST_CASE("FP8 is refused where it cannot run, naming what to use instead") {
  static_assert(acc::is_precision_policy_v<acc::FP8>);
  const auto message = error_of([] {
    acc::Accelerator<acc::Single, acc::FP8> accelerator(
        acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true));
  });
  CHECK(message.find("--mixed_precision fp8 (mixed_precision: fp8) cannot run here") == 0);
  CHECK(message.find("use --mixed_precision bf16") != std::string::npos);
}

TEST_CASE("fp8_config: Accelerate's keys and variables make FP8's recipe") {
  const auto config = acc::Config::from_yaml(
      "mixed_precision: fp8\n"
      "fp8_config:\n"
      "  backend: TE\n"
      "  fp8_format: E4M3\n"
      "  amax_history_len: 16\n"
      "  amax_compute_algorithm: max\n"
      "  margin: 1\n"
      "  interval: 1\n"
      "  override_linear_precision: false\n"
      "  use_autocast_during_eval: false\n");
  const auto recipe = acc::fp8_recipe(config);
  CHECK(recipe.scaling() == acc::FP8Recipe::Scaling::delayed);
  CHECK(recipe.format() == acc::FP8Recipe::Format::e4m3);
  CHECK(recipe.amax_history_len() == 16);
  CHECK(recipe.amax_compute_algorithm() == acc::FP8Recipe::AmaxAlgorithm::max);
  CHECK(recipe.margin() == 1);
  CHECK(acc::accelerator_options(config).fp8().amax_history_len() == 16);
  // Defaults: torchao's recipe (dynamic tensorwise scaling), HYBRID formats.
  const auto defaults = acc::fp8_recipe(acc::Config::from_yaml("mixed_precision: fp8\n"));
  CHECK(defaults.scaling() == acc::FP8Recipe::Scaling::tensorwise);
  CHECK(defaults.format() == acc::FP8Recipe::Format::hybrid);

  // Written back for fp8 only, and read back the same.
  CHECK(config.to_yaml().find("fp8_config:\n  amax_compute_algorithm: max\n  amax_history_len: 16\n  backend: TE\n"
                              "  fp8_format: E4M3\n  margin: 1\n") != std::string::npos);
  CHECK(acc::fp8_recipe(acc::Config::from_yaml(config.to_yaml())).margin() == 1);
  CHECK(acc::Config::from_yaml("mixed_precision: bf16\n").to_yaml().find("fp8_config") == std::string::npos);

  const auto overridden = acc::Config::from_yaml("mixed_precision: fp8\n")
                              .with_overrides([](std::string_view name) -> std::optional<std::string> {
                                if (name == "ACCELERATE_FP8_BACKEND") return "TE";
                                if (name == "ACCELERATE_FP8_AMAX_COMPUTE_ALGO") return "max";
                                return std::nullopt;
                              });
  CHECK(acc::fp8_recipe(overridden).scaling() == acc::FP8Recipe::Scaling::delayed);
  CHECK(overridden.fp8.amax_compute_algorithm == "max");

  CHECK(error_of([] {
          acc::Config::from_yaml("fp8_config:\n  backend: MSAMP\n", "my.yaml");
        }).find("my.yaml:2: 'fp8_config.backend' is 'MSAMP'; allowed values: AO, TE") == 0);
  CHECK(error_of([] {
          acc::Config::from_yaml("fp8_config:\n  amax_history_len: 4096\n", "my.yaml");
        }).find("amax_history_len") != std::string::npos);
}

#if ACC_HAS_FP8
namespace {

constexpr double kE4m3Max = 448, kE5m2Max = 57344;

// x cast to fp8 the way ATen does it (scale in fp32, values clamped to the format's range,
// rounded to nearest), as bytes: the reference for the fused kernel.
at::Tensor reference_fp8(const at::Tensor& x, double fp8_max, at::ScalarType fp8) {
  const auto scale = at::full({}, static_cast<float>(fp8_max), x.options().dtype(at::kFloat)) /
                     x.abs().max().to(at::kFloat).clamp_min(1e-12);
  return (x.to(at::kFloat) * scale).clamp(-fp8_max, fp8_max).to(fp8);
}

// The value x's fp8 copy stands for, in float64: the fp8 value times 1 / scale.
at::Tensor dequantized(const at::Tensor& x, double fp8_max, at::ScalarType fp8) {
  const auto scale = at::full({}, static_cast<float>(fp8_max), x.options().dtype(at::kFloat)) /
                     x.abs().max().to(at::kFloat).clamp_min(1e-12);
  return reference_fp8(x, fp8_max, fp8).to(at::kDouble) / scale.to(at::kDouble);
}

bool fp8_gpu() {
  return torch::cuda::is_available() && acc::fp8::unsupported_reason(c10::Device(c10::kCUDA, 0)).empty();
}

}  // namespace

// The cast is an internal of fp8/impl/scaled_linear.ipp, which a test sees only header-only (the
// device's suite, scripts/gpu.sh, builds that way); with separate compilation it is in acc::compiled.
#if !defined(ACC_SEPARATE_COMPILATION)
TEST_CASE("CUDA: the fused cast writes ATen's fp8 values, plain and transposed, and 1 / scale" *
          doctest::skip(!fp8_gpu())) {
  using acc::fp8::kernels::Format;
  const auto cuda = at::TensorOptions(at::kCUDA);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto& [format, fp8_max, fp8] : {std::tuple{Format::e4m3, kE4m3Max, at::kFloat8_e4m3fn},
                                               std::tuple{Format::e5m2, kE5m2Max, at::kFloat8_e5m2}}) {
      CAPTURE(dtype);
      CAPTURE(fp8);
      // 80 x 48: tiles of 64 cut in both directions; values over several binades, and zeros.
      auto x = (at::randn({80, 48}, cuda) * at::exp(at::randn({80, 48}, cuda) * 3)).to(dtype);
      x.index_put_({0}, 0);
      const auto cast = acc::fp8::detail::cast(x, format, true, true, nullptr, acc::FP8Recipe());
      const auto expected = reference_fp8(x, fp8_max, fp8);
      CHECK(at::equal(cast.data.view(at::kByte), expected.view(at::kByte)));
      CHECK(at::equal(cast.transposed.view(at::kByte), expected.t().contiguous().view(at::kByte)));
      const auto scale = static_cast<float>(fp8_max) / x.abs().max().to(at::kFloat).item<float>();
      CHECK(cast.inv_scale.item<float>() == 1.f / scale);
    }
  }
}
#endif

TEST_CASE(
    "CUDA: an fp8 Linear's output and gradients are the fp8 operands' exact products, within fp8's precision "
    "of float64's" *
    doctest::skip(!fp8_gpu())) {
  const auto cuda = at::TensorOptions(at::kCUDA);
  constexpr int64_t M = 64, K = 96, N = 48;
  for (const auto scaling : {acc::FP8Recipe::Scaling::tensorwise, acc::FP8Recipe::Scaling::delayed}) {
    CAPTURE(static_cast<int>(scaling));
    acc::nn::Linear layer(K, N);
    layer->to(at::kCUDA);
    layer->set_matmul(std::make_shared<acc::fp8::ScaledLinear>(acc::FP8Recipe().scaling(scaling)));
    const auto x = at::randn({2, M / 2, K}, cuda).requires_grad_();
    const auto y = layer(x);
    REQUIRE((y.scalar_type() == at::kBFloat16));
    if (scaling == acc::FP8Recipe::Scaling::tensorwise) {
      // Without grad mode (evaluation) no copy is kept for backward, and the output is the same.
      at::NoGradGuard no_grad;
      CHECK(at::equal(layer(x), y.detach()));
    }
    const auto grad_y = at::randn({2, M / 2, N}, cuda).to(at::kBFloat16);
    y.backward(grad_y);

    const auto x2 = x.detach().reshape({M, K}), g = grad_y.reshape({M, N}).to(at::kFloat);
    const auto w = layer->weight.detach(), b = layer->bias.detach().to(at::kDouble);
    // The operands as fp8 holds them (e4m3 forward, e5m2 gradient: the HYBRID format).
    const auto xq = dequantized(x2, kE4m3Max, at::kFloat8_e4m3fn), wq = dequantized(w, kE4m3Max, at::kFloat8_e4m3fn);
    const auto gq = dequantized(g, kE5m2Max, at::kFloat8_e5m2);

    // 1. Against the fp8 operands' product in float64, what is left is the arithmetic. Hopper's
    // fp8 tensor cores keep about 14 bits of a running sum (cuBLAS promotes it to fp32 now and
    // then; fast accumulation, which the forward uses, less often): a sum of n terms is off by at
    // most n 2^-14 of the sum of their magnitudes. The forward's output is rounded to bf16 (2^-8
    // of the value; the bias is rounded to bf16 before it is added); the gradients are fp32.
    const auto accumulation = [](int64_t terms, const at::Tensor& a, const at::Tensor& b) {
      return terms * std::ldexp(1.0, -14) * at::matmul(a.abs(), b.abs());
    };
    const auto worst = [](const at::Tensor& error, const at::Tensor& bound) {
      return (error / (bound + 1e-300)).max().item<double>();  // <= 1 within the bound
    };
    const auto yq = at::matmul(xq, wq.t()) + b;
    const auto y_bound = accumulation(K, xq, wq.t()) + std::ldexp(1.0, -8) * (yq.abs() + b.abs());
    const auto y_error = (y.detach().reshape({M, N}).to(at::kDouble) - yq).abs();
    CHECK(worst(y_error, y_bound) <= 1);
    const auto dx_q = at::matmul(gq, wq);
    CHECK(worst((x.grad().reshape({M, K}).to(at::kDouble) - dx_q).abs(), accumulation(N, gq, wq)) <= 1);
    const auto dw_q = at::matmul(gq.t(), xq);
    CHECK(worst((layer->weight.grad().to(at::kDouble) - dw_q).abs(), accumulation(M, gq.t(), xq)) <= 1);
    // The bias's gradient is a plain fp32 sum of M terms (2^-24 each).
    const auto db = g.to(at::kDouble).sum(0);
    CHECK(worst((layer->bias.grad().to(at::kDouble) - db).abs(),
                M * std::ldexp(1.0, -24) * g.abs().sum(0).to(at::kDouble)) <= 1);

    // 2. Against float64's exact product, fp8's own precision: an e4m3 value is within 2^-4 of
    // the value (3 mantissa bits), or 2^-10 / scale where it is subnormal; e5m2 within 2^-3, or
    // 2^-17 / scale. Each product term is off by at most e_a |b| + |a| e_b + e_a e_b.
    const auto error_of_e4m3 = [](const at::Tensor& v) {
      return std::ldexp(1.0, -4) * v.abs() + std::ldexp(1.0, -10) * v.abs().max() / kE4m3Max;
    };
    const auto ex = error_of_e4m3(x2.to(at::kDouble)), ew = error_of_e4m3(w.to(at::kDouble));
    const auto y_exact = at::matmul(x2.to(at::kDouble), w.to(at::kDouble).t()) + b;
    const auto fp8_bound = at::matmul(ex, w.to(at::kDouble).abs().t()) + at::matmul(x2.to(at::kDouble).abs(), ew.t()) +
                           at::matmul(ex, ew.t());
    CHECK(worst((y.detach().reshape({M, N}).to(at::kDouble) - y_exact).abs(), fp8_bound + y_bound) <= 1);
  }
}

#if !defined(ACC_SEPARATE_COMPILATION)  // detail::cast, as above
TEST_CASE("CUDA: delayed scaling casts with the scale of earlier amaxes and keeps their history" *
          doctest::skip(!fp8_gpu())) {
  const auto cuda = at::TensorOptions(at::kCUDA);
  for (const auto algorithm : {acc::FP8Recipe::AmaxAlgorithm::most_recent, acc::FP8Recipe::AmaxAlgorithm::max}) {
    const auto recipe = acc::FP8Recipe()
                            .scaling(acc::FP8Recipe::Scaling::delayed)
                            .amax_history_len(4)
                            .amax_compute_algorithm(algorithm)
                            .margin(1);
    acc::fp8::DelayedScale state;
    const auto x1 = at::full({16, 16}, 2.0, cuda), x2 = at::full({16, 16}, 1.0, cuda);
    // The first cast scales from its own amax (448 / 2), then the history has 2 and the next
    // scale is 448 / 2 / 2^margin.
    auto first = acc::fp8::detail::cast(x1, acc::fp8::kernels::Format::e4m3, true, false,
                                        acc::fp8::detail::delayed_or_null(state, recipe, x1), recipe);
    CHECK(first.inv_scale.item<float>() == 2.f / 448.f);
    CHECK(state.history.cpu().equal(at::tensor({2.f, 0.f, 0.f, 0.f})));
    CHECK(state.scale.item<float>() == 448.f / 2.f / 2.f);
    // The second casts with that scale, and records its own amax 1.
    auto second = acc::fp8::detail::cast(x2, acc::fp8::kernels::Format::e4m3, true, false, &state, recipe);
    CHECK(second.inv_scale.item<float>() == 4.f / 448.f);
    CHECK(second.data.to(at::kFloat).eq(112.f).all().item<bool>());  // 1 * 448 / 4
    CHECK(state.history.cpu().equal(at::tensor({1.f, 2.f, 0.f, 0.f})));
    const float amax = algorithm == acc::FP8Recipe::AmaxAlgorithm::max ? 2.f : 1.f;
    CHECK(state.scale.item<float>() == 448.f / amax / 2.f);
    CHECK(state.amax_now.item<float>() == 0.f);
  }
}
#endif

namespace {

struct TinyLmImpl : torch::nn::Module {
  torch::nn::Embedding embed{register_module("embed", torch::nn::Embedding(64, 64))};
  acc::nn::Linear in{register_module("in", acc::nn::Linear(64, 128))};
  acc::nn::Linear up{register_module("up", acc::nn::Linear(128, 256))};
  acc::nn::Linear down{register_module("down", acc::nn::Linear(256, 128))};
  acc::nn::Linear head{register_module("head", acc::nn::Linear(128, 64))};
  at::Tensor forward(const at::Tensor& tokens) {
    const auto h = in(embed(tokens)).relu();
    return head(h + down(up(h).relu()));
  }
};
TORCH_MODULE(TinyLm);

// The loss after `steps` AdamW steps on "predict (7 t + 3) mod 64", from one seed.
template <class Precision>
std::pair<double, double> tiny_lm_losses(int steps) {
  acc::Accelerator<acc::Single, Precision> accelerator(
      acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}));
  torch::manual_seed(5);
  TinyLm net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(2e-3));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  if constexpr (std::is_same_v<Precision, acc::FP8>) {
    CHECK(net->up->matmul() != nullptr);
    CHECK(net->head->matmul() == nullptr);
  }
  const auto cuda = at::TensorOptions(accelerator.device());
  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    const auto tokens = at::randint(64, {32, 16}, cuda.dtype(at::kLong));
    const auto logits = model(tokens);
    const auto loss =
        at::cross_entropy_loss(logits.reshape({-1, 64}).to(at::kFloat), ((tokens * 7 + 3) % 64).reshape(-1));
    optimizer.zero_grad();
    accelerator.backward(loss);
    optimizer.step();
    (step == 0 ? first : last) = acc::item<double>(loss);
  }
  return {first, last};
}

}  // namespace

TEST_CASE("CUDA: FP8 trains as BF16 does: the middle layers in fp8, the loss within 5% of bf16's" *
          doctest::skip(!fp8_gpu())) {
  const auto [first8, last8] = tiny_lm_losses<acc::FP8>(150);
  const auto [first16, last16] = tiny_lm_losses<acc::BF16>(150);
  CHECK(last16 < 0.25 * first16);
  // Both runs see the same data from the same initial weights; fp8's relative precision (2^-4
  // per operand) perturbs each update by a few percent, which a converging run does not amplify:
  // the final losses agree to within 5% (the goal on a GPT is 1%; this model is 100 x smaller
  // and its loss near zero, where relative differences are larger).
  CHECK(std::abs(last8 - last16) <= 0.05 * last16 + 0.01);
  CHECK(std::abs(first8 - first16) <= 0.05 * first16);
}
#endif
