// Sampler policies: the order in which a data loader visits its dataset each epoch. Every rank
// computes the same order from the same seed and epoch, then takes its own share of the batches.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randperm.h>

#include <cstdint>
#include <numeric>
#include <string_view>
#include <type_traits>
#include <vector>

namespace acc {

// Visits the dataset in index order.
struct Sequential {
  static constexpr std::string_view name = "sequential";
  static std::vector<int64_t> indices(int64_t size, uint64_t /*seed*/, int64_t /*epoch*/) {
    std::vector<int64_t> order(static_cast<std::size_t>(size));
    std::iota(order.begin(), order.end(), int64_t{0});
    return order;
  }
};

// A fresh permutation per epoch, drawn from a generator seeded with seed + epoch: the same order as
// PyTorch's DistributedSampler for the same seed and epoch.
struct Shuffled {
  static constexpr std::string_view name = "shuffled";
  static std::vector<int64_t> indices(int64_t size, uint64_t seed, int64_t epoch) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(epoch));
    const auto permutation = at::randperm(size, generator, at::TensorOptions().dtype(at::kLong)).contiguous();
    const auto* data = permutation.data_ptr<int64_t>();
    return std::vector<int64_t>(data, data + size);
  }
};

// The order of a loader that names none: the sampler policy of the Accelerator that prepares it,
// and index order until then. A loader names its order with DataLoaderOptions::shuffle or a
// sampler policy of its own, as Python's DataLoader(shuffle=...) or DataLoader(sampler=...).
struct DefaultOrder : Sequential {
  static constexpr std::string_view name = "default";
};

namespace detail {
template <class S, class = void>
struct is_sampler_policy : std::false_type {};
template <class S>
struct is_sampler_policy<S, std::void_t<decltype(std::string_view{S::name}),
                                        decltype(std::vector<int64_t>{S::indices(int64_t{}, uint64_t{}, int64_t{})})>>
    : std::true_type {};
}  // namespace detail

template <class S>
inline constexpr bool is_sampler_policy_v = detail::is_sampler_policy<S>::value;

}  // namespace acc
