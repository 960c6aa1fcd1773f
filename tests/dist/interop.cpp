// The C++ side of the safetensors check against Python (tests/golden/safetensors_interop.py,
// run by scripts/checkpoint_interop.sh where Python has torch and safetensors):
//   acc_dist_worker interop-write DIR   DIR/cpp/{dtypes,model}.safetensors and a checkpoint in
//                                       DIR/checkpoint, every value from the formulas below
//   acc_dist_worker interop-read DIR    checks DIR/dtypes.safetensors and loads DIR/model.safetensors
//                                       into the model (written by Python, or by interop-write)
// The formulas are the Python script's, value for value.
#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <acc/checkpoint/safetensors.hpp>

#include <torch/nn/modules/linear.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct InteropNetImpl : torch::nn::Module {
  InteropNetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(4, 3))), fc2(register_module("fc2", torch::nn::Linear(3, 2))) {}
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(InteropNet);

// k = (7 i) mod 23 over the flat index i: floats (k - 11) / 8, signed integers k - 11, U8 k + 200,
// BOOL i mod 3 == 0; all exact in every dtype.
std::vector<std::pair<std::string, at::Tensor>> expected_dtypes() {
  const auto i = at::arange(24, at::kLong).reshape({2, 3, 4});
  const auto k = (i * 7).remainder(23);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, type] : std::vector<std::pair<std::string, at::ScalarType>>{
           {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}})
    tensors.emplace_back(name, ((k - 11).to(at::kDouble) / 8).to(type));
  for (const auto& [name, type] : std::vector<std::pair<std::string, at::ScalarType>>{
           {"I64", at::kLong}, {"I32", at::kInt}, {"I16", at::kShort}, {"I8", at::kChar}})
    tensors.emplace_back(name, (k - 11).to(type));
  tensors.emplace_back("U8", (k + 200).to(at::kByte));
  tensors.emplace_back("BOOL", i.remainder(3).eq(0));
  tensors.emplace_back("I64_big", at::tensor(std::vector<int64_t>{1LL << 40, -(1LL << 62), (1LL << 62) + 3}));
  tensors.emplace_back("scalar", at::scalar_tensor(0.5, at::kFloat));
  tensors.emplace_back("empty", at::zeros({0, 3}, at::kFloat));
  return tensors;
}

// Parameter `name`'s element i: ((5 i + len(name)) mod 17 - 8) / 16.
at::Tensor expected_parameter(const std::string& name, at::IntArrayRef shape) {
  int64_t numel = 1;
  for (const auto d : shape) numel *= d;
  const auto i = at::arange(numel, at::kLong);
  return (((i * 5 + static_cast<int64_t>(name.size())).remainder(17) - 8).to(at::kFloat) / 16).reshape(shape);
}

int write(const fs::path& dir) {
  fs::create_directories(dir / "cpp");
  acc::safetensors::save_file(expected_dtypes(), dir / "cpp" / "dtypes.safetensors", {{"writer", "acc"}});
  acc::Accelerator<> accelerator(acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true));
  InteropNet net;
  {
    at::NoGradGuard no_grad;
    for (auto& p : net->named_parameters()) p.value().copy_(expected_parameter(p.key(), p.value().sizes()));
  }
  auto model = accelerator.prepare(net);
  accelerator.save_model(model, dir / "cpp");
  // Shards of at most 64 bytes: fc1 (48 + 12 bytes) in the first, fc2 (24 + 8) in the second.
  accelerator.save_model(model, dir / "cpp_sharded", 64);
  accelerator.save_state(dir / "checkpoint");
  std::cout << "interop-write: " << dir / "cpp"
            << " and " << dir / "checkpoint"
            << "\n";
  return 0;
}

int read(const fs::path& dir) {
  int mismatches = 0;
  const auto contents = acc::safetensors::load_file(dir / "dtypes.safetensors");
  const auto expected = expected_dtypes();
  if (contents.tensors.size() != expected.size() || !contents.metadata.count("writer")) {
    std::cerr << "interop-read: " << dir / "dtypes.safetensors"
              << " has " << contents.tensors.size() << " tensors (expected " << expected.size()
              << ") and metadata writer="
              << (contents.metadata.count("writer") ? contents.metadata.at("writer") : "(none)") << "\n";
    ++mismatches;
  }
  for (const auto& [name, tensor] : expected) {
    const auto it = contents.tensors.find(name);
    const bool same = it != contents.tensors.end() && it->second.scalar_type() == tensor.scalar_type() &&
                      it->second.sizes() == tensor.sizes() && at::equal(it->second, tensor);
    if (!same) {
      std::cerr << "interop-read: tensor " << name << " differs from the formula\n";
      ++mismatches;
    }
  }
  acc::Accelerator<> accelerator(acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true));
  InteropNet net;
  accelerator.load_model(net, dir);
  for (const auto& p : net->named_parameters())
    if (!at::equal(p.value(), expected_parameter(p.key(), p.value().sizes()))) {
      std::cerr << "interop-read: parameter " << p.key() << " differs from the formula\n";
      ++mismatches;
    }
  std::cout << "interop-read: " << dir << " (writer " << contents.metadata.at("writer")
            << "): " << contents.tensors.size() << " tensors of every dtype and " << net->named_parameters().size()
            << " parameters, " << mismatches << " mismatches\n";
  return mismatches == 0 ? 0 : 1;
}

}  // namespace

int safetensors_interop(const std::string& mode, const std::string& dir) {
  try {
    if (mode == "interop-write") return write(dir);
    return read(dir);
  } catch (const std::exception& e) {
    std::cerr << mode << ": " << e.what() << "\n";
    return 1;
  }
}
