// Building models empty and filling them: acc::init_empty_weights() (big_modeling/
// init_empty_weights.hpp), acc::materialize (big_modeling/materialize.hpp) and
// acc::load_checkpoint_in_model (checkpoint/load_checkpoint_in_model.hpp).
#include "../bench/common/peak_rss.hpp"
#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/acc.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/module_state.hpp>

#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Parameters (a linear layer, an embedding) and buffers (batch norm's running statistics).
struct NetImpl : torch::nn::Module {
  NetImpl()
      : embed(register_module("embed", torch::nn::Embedding(10, 6))),
        fc(register_module("fc", torch::nn::Linear(6, 4))),
        norm(register_module("norm", torch::nn::BatchNorm1d(4))) {}
  at::Tensor forward(const at::Tensor& ids) { return norm(fc(embed(ids).sum(1))); }
  torch::nn::Embedding embed;
  torch::nn::Linear fc;
  torch::nn::BatchNorm1d norm;
};
TORCH_MODULE(Net);

Net empty_net() {
  const auto empty = acc::init_empty_weights();
  return Net();
}

// A net with real weights, trained one step so that its buffers differ from their initial values.
Net trained_net() {
  torch::manual_seed(3);
  Net net;
  net->train();
  torch::optim::SGD sgd(net->parameters(), 0.1);
  net(torch::randint(10, {5, 3})).pow(2).sum().backward();
  sgd.step();
  return net;
}

std::vector<std::pair<std::string, at::Tensor>> entries(const Net& net) { return acc::detail::module_state(*net); }

std::vector<const c10::TensorImpl*> tensor_objects(const Net& net) {
  std::vector<const c10::TensorImpl*> objects;
  for (const auto& p : net->parameters()) objects.push_back(p.unsafeGetTensorImpl());
  for (const auto& b : net->buffers()) objects.push_back(b.unsafeGetTensorImpl());
  return objects;
}

struct RawKeys {
  uint64_t included, excluded;
  bool operator==(const RawKeys& o) const { return included == o.included && excluded == o.excluded; }
};
// The thread's local dispatch keys, every bit of them (backend bits included).
RawKeys raw_keys() {
  auto keys = c10::impl::tls_local_dispatch_key_set();
  return {keys.included_.raw_repr(), keys.excluded_.raw_repr()};
}

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

}  // namespace

TEST_SUITE("big_modeling") {
  TEST_CASE("init_empty_weights: a module built in the scope has meta parameters and buffers, without storage") {
    const auto net = empty_net();
    std::vector<std::string> names;
    for (const auto& [name, t] : entries(net)) {
      CAPTURE(name);
      names.push_back(name);
      if (name == "norm.num_batches_tracked") {
        // A 0-dim tensor from a C++ scalar on the CPU skips the dispatcher in libtorch: it stays real.
        CHECK(t.is_cpu());
        CHECK(t.dim() == 0);
        continue;
      }
      CHECK(t.is_meta());
      CHECK(t.storage().data() == nullptr);
    }
    CHECK(names == std::vector<std::string>{"embed.weight", "fc.weight", "fc.bias", "norm.weight", "norm.bias",
                                            "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"});
    CHECK(acc::meta_tensor_names(*net) == std::vector<std::string>(names.begin(), names.end() - 1));
    CHECK(net->fc->weight.sizes() == at::IntArrayRef{4, 6});
    CHECK(net->fc->weight.requires_grad());
    CHECK(net->norm->running_mean.dtype() == at::kFloat);
  }

  TEST_CASE("init_empty_weights: every tensor made in the scope is meta, whatever its options say; after it, real") {
    {
      const auto empty = acc::init_empty_weights();
      CHECK(torch::zeros({3}, torch::kDouble).is_meta());
      CHECK(torch::tensor({1.0f, 2.0f}).is_meta());
      CHECK(torch::arange(4).is_meta());
      CHECK(torch::randn({2, 2}, torch::TensorOptions().device(torch::kCPU)).is_meta());
    }
    const auto after = torch::ones({3});
    CHECK(after.is_cpu());
    CHECK(after.sum().item<float>() == 3.0f);
  }

  TEST_CASE("init_empty_weights: the thread's dispatch keys come back bit for bit: on exit, nested, on an exception") {
    const auto before = raw_keys();
    {
      const auto outer = acc::init_empty_weights();
      const auto inside = raw_keys();
      CHECK_FALSE(inside == before);
      {
        const auto inner = acc::init_empty_weights();
        CHECK(torch::ones({1}).is_meta());
      }
      CHECK(raw_keys() == inside);  // the inner scope ends, the outer one goes on
      CHECK(torch::ones({1}).is_meta());
    }
    CHECK(raw_keys() == before);
    CHECK_THROWS_AS(
        [] {
          const auto empty = acc::init_empty_weights();
          throw std::runtime_error("construction failed");
        }(),
        std::runtime_error);
    CHECK(raw_keys() == before);
    // Operations after the scopes run their CPU kernels again (a backend bit left behind would send
    // them to Meta, which has no `equal`).
    const auto t = torch::arange(3);
    CHECK(torch::equal(t, torch::tensor({0, 1, 2}, torch::kLong)));
  }

  TEST_CASE(
      "materialize: meta tensors get zeroed storage and stay the same tensors, which an optimizer made before sees") {
    auto net = empty_net();
    const auto objects = tensor_objects(net);
    torch::optim::SGD sgd(net->parameters(), 0.5);
    acc::materialize(*net, at::kCPU);
    CHECK(tensor_objects(net) == objects);
    CHECK_FALSE(acc::has_meta_tensors(*net));
    for (const auto& [name, t] : entries(net)) {
      CAPTURE(name);
      CHECK(t.is_cpu());
      CHECK(t.eq(0).all().item<bool>());
    }
    CHECK(net->fc->weight.requires_grad());
    CHECK_FALSE(net->norm->running_mean.requires_grad());
    // The members (norm->bias) and the optimizer hold the same tensors: a step of one shows in the
    // other. Every weight is zero, so each of the 2 samples' outputs is norm.bias: its gradient is
    // 2, and a step of 0.5 takes it to -1; fc.bias's gradient passes through norm.weight = 0.
    net->eval();
    net(torch::randint(10, {2, 3})).sum().backward();
    sgd.step();
    CHECK(net->norm->bias.grad().eq(2).all().item<bool>());
    CHECK(net->norm->bias.eq(-1).all().item<bool>());
    CHECK(net->fc->bias.grad().eq(0).all().item<bool>());
  }

  TEST_CASE("materialize: tensors with storage are left alone, and the meta device is refused") {
    Net net;
    const auto before = net->fc->weight.clone();
    acc::materialize(*net, at::kCPU);
    CHECK(torch::equal(net->fc->weight, before));
    const auto message = error_of([&] { acc::materialize(*net, at::kMeta); });
    CHECK(contains(message, "asked for the meta device itself"));
  }

  TEST_CASE("load_checkpoint_in_model: model.safetensors into an empty module, tensor by tensor, same tensors") {
    TempDir dir;
    auto saved = trained_net();
    acc::safetensors::save_file(entries(saved), dir.path / "model.safetensors");
    auto net = empty_net();
    const auto objects = tensor_objects(net);
    acc::load_checkpoint_in_model(*net, dir.path);  // the directory, as save_model writes it
    CHECK(tensor_objects(net) == objects);
    const auto expected = entries(saved);
    const auto loaded = entries(net);
    REQUIRE(loaded.size() == expected.size());
    for (std::size_t i = 0; i < loaded.size(); ++i) {
      CAPTURE(loaded[i].first);
      CHECK(loaded[i].first == expected[i].first);
      CHECK(loaded[i].second.is_cpu());
      CHECK(torch::equal(loaded[i].second, expected[i].second));  // bytes copied, nothing computed
    }
    CHECK(net->fc->weight.requires_grad());
    net->eval();
    saved->eval();
    const auto ids = torch::randint(10, {4, 3});
    CHECK(torch::equal(net(ids), saved(ids)));
  }

  TEST_CASE("load_checkpoint_in_model: the shards and index save_model writes") {
    TempDir dir;
    auto saved = trained_net();
    acc::Accelerator<> accelerator(cpu_options());
    auto model = accelerator.prepare(saved);
    // embed.weight is 240 bytes, the others at most 96: several files of at most 256 bytes.
    accelerator.save_model(model, dir.path / "export", 256);
    REQUIRE(std::filesystem::exists(dir.path / "export" / acc::weights::kIndexFile));
    REQUIRE(acc::weights::model_files(dir.path / "export").size() > 1);
    auto net = empty_net();
    acc::load_checkpoint_in_model(*net, dir.path / "export" / acc::weights::kIndexFile);
    const auto loaded = entries(net);
    const auto expected = entries(saved);
    REQUIRE(loaded.size() == expected.size());
    for (std::size_t i = 0; i < loaded.size(); ++i) {
      CAPTURE(loaded[i].first);
      CHECK(torch::equal(loaded[i].second, expected[i].second));
    }
  }

  TEST_CASE("load_checkpoint_in_model: a module with storage copies in place; a file's dtype becomes the module's") {
    TempDir dir;
    const auto saved = trained_net();
    std::vector<std::pair<std::string, at::Tensor>> as_double;
    for (const auto& [name, t] : entries(saved))
      as_double.emplace_back(name, t.is_floating_point() ? t.to(at::kDouble) : t);
    acc::safetensors::save_file(as_double, dir.path / "double.safetensors");

    Net real;
    const auto weight = real->fc->weight;
    const auto storage = weight.data_ptr();
    acc::load_checkpoint_in_model(*real, dir.path / "double.safetensors");
    CHECK(real->fc->weight.data_ptr() == storage);  // copied into, not replaced
    auto empty = empty_net();
    acc::load_checkpoint_in_model(*empty, dir.path / "double.safetensors");
    for (const auto* net : {&real, &empty}) {
      CHECK((*net)->fc->weight.dtype() == at::kFloat);
      // float64 -> float32 rounds each value back to the float32 it was saved from.
      CHECK(torch::equal((*net)->fc->weight, saved->fc->weight));
      CHECK(torch::equal((*net)->norm->num_batches_tracked, saved->norm->num_batches_tracked));
    }
  }

  TEST_CASE(
      "load_checkpoint_in_model: missing, unexpected and misshapen entries are named with the file; nothing loads") {
    TempDir dir;
    const auto saved = trained_net();
    auto state = entries(saved);
    state.erase(state.begin() + 1);  // fc.weight
    state.emplace_back("head.weight", torch::zeros({2}));
    for (auto& [name, t] : state)
      if (name == "embed.weight") t = torch::zeros({11, 6});
    const auto file = dir.path / "bad.safetensors";
    acc::safetensors::save_file(state, file);
    auto net = empty_net();
    const auto message = error_of([&] { acc::load_checkpoint_in_model(*net, file); });
    CHECK(contains(message, file.string()));
    CHECK(contains(message, "missing keys: fc.weight"));
    CHECK(contains(message, "unexpected keys: head.weight"));
    CHECK(contains(message, "embed.weight is [11, 6] there but [10, 6] in the model"));
    CHECK(acc::meta_tensor_names(*net).size() == 7);  // checked before anything was read

    CHECK(contains(error_of([&] { acc::load_checkpoint_in_model(*net, dir.path / "nothing"); }), "does not exist"));
  }

  TEST_CASE("load_checkpoint_in_model: a tensor in two files of a sharded checkpoint is refused") {
    TempDir dir;
    const auto saved = trained_net();
    const auto state = entries(saved);
    acc::safetensors::save_file(state, dir.path / "a.safetensors");
    acc::safetensors::save_file({state.front()}, dir.path / "b.safetensors");
    std::map<std::string, std::string> weight_map;
    for (const auto& [name, t] : state) weight_map[name] = "a.safetensors";
    weight_map[state.front().first] = "b.safetensors";
    std::ofstream(dir.path / acc::weights::kIndexFile) << acc::weights::index_json(0, weight_map);
    auto net = empty_net();
    const auto message = error_of([&] { acc::load_checkpoint_in_model(*net, dir.path / acc::weights::kIndexFile); });
    CHECK(contains(message, "tensor 'embed.weight' is in two files"));
  }

  TEST_CASE("load_checkpoint_in_model: the host holds the model once, not a second copy beside it") {
    // 8 layers of 3072 x 3072 float32, 36 MiB each: above glibc's largest mmap threshold (32 MiB),
    // so each weight comes from fresh pages, never from freed memory still resident, and the
    // resident memory grows by at least what is written into them. (The 12 KiB biases may land in
    // freed heap memory that is resident already.)
    TempDir dir;
    constexpr int64_t kLayers = 8, kWidth = 3072;
    const auto layer_bytes = kWidth * kWidth * 4, model_bytes = kLayers * (layer_bytes + kWidth * 4);
    const auto build = [&] {
      torch::nn::Sequential layers;
      for (int64_t i = 0; i < kLayers; ++i) layers->push_back(torch::nn::Linear(kWidth, kWidth));
      return layers;
    };
    {
      const auto saved = build();
      acc::safetensors::save_file(acc::detail::module_state(*saved), dir.path / "model.safetensors");
    }
    torch::nn::Sequential layers{nullptr};
    {
      const auto empty = acc::init_empty_weights();
      layers = build();
    }
    const auto resident = peak_rss::current();
    peak_rss::restart();
    acc::load_checkpoint_in_model(*layers, dir.path);
    const auto growth = peak_rss::peak() - resident;
    // Each tensor read from the file becomes the parameter's storage: the growth is the model, plus
    // page rounding and the reader's small buffers. A second copy of a layer in flight beside the
    // model would add 36 MiB, of the model 288 MiB: the bound is the model plus half a layer. Under
    // AddressSanitizer each allocated byte also makes its shadow resident, one byte per 8.
#if defined(__SANITIZE_ADDRESS__)
    constexpr int64_t shadow_bytes_per_8 = 1;
#else
    constexpr int64_t shadow_bytes_per_8 = 0;
#endif
    CHECK(growth >= kLayers * layer_bytes);
    CHECK(growth < model_bytes + model_bytes * shadow_bytes_per_8 / 8 + layer_bytes / 2);
  }

  TEST_CASE("fsdp_cpu_ram_efficient_loading reaches FSDPOptions; without the key it is off, as in Python") {
    const auto with = acc::Config::from_yaml(
        "distributed_type: FSDP\nfsdp_config:\n  fsdp_cpu_ram_efficient_loading: true\n", "with.yaml");
    CHECK(acc::accelerator_options(with).fsdp().cpu_ram_efficient_loading());
    const auto without = acc::Config::from_yaml("distributed_type: FSDP\n", "without.yaml");
    CHECK_FALSE(acc::accelerator_options(without).fsdp().cpu_ram_efficient_loading());
    CHECK_FALSE(acc::FSDPOptions().cpu_ram_efficient_loading());
  }

  TEST_CASE("one process refuses a model built empty, naming how to fill it") {
    acc::Accelerator<> accelerator(cpu_options());
    auto net = empty_net();
    const auto message = error_of([&] { (void)accelerator.prepare(net); });
    CHECK(contains(message, "has tensors on the meta device ('embed.weight' among them)"));
    CHECK(contains(message, "acc::load_checkpoint_in_model"));
    CHECK(contains(message, "acc::materialize"));
  }
}
