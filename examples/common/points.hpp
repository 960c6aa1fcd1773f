// The examples' task, small enough to train on a CPU in seconds, in place of BERT on GLUE MRPC:
// points in 8 dimensions labelled by which of 4 fixed directions they lie closest to. The
// directions depend on nothing but the code; the points on the seed (training and evaluation sets
// differ by seed).
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <torch/data/example.h>

#include <cstddef>
#include <cstdint>

namespace examples {

struct Points {
  at::Tensor inputs, labels;
  Points(int64_t count, uint64_t seed) {
    auto directions = at::eye(8).narrow(0, 0, 4) + at::eye(8).narrow(0, 4, 4) * 0.5;
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    inputs = at::randn({count, 8}, generator);
    labels = at::matmul(inputs, directions.t()).argmax(1);
  }
  std::size_t size() const { return static_cast<std::size_t>(inputs.size(0)); }
  torch::data::Example<> get(std::size_t i) const {
    const auto row = static_cast<int64_t>(i);
    return {inputs[row], labels[row]};
  }
};

}  // namespace examples
