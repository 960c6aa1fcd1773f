#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <algorithm>
#include <numeric>
#include <vector>

namespace {

// Example i is the number i.
struct Indices {
  int64_t count;
  std::size_t size() const { return static_cast<std::size_t>(count); }
  at::Tensor get(std::size_t i) const { return at::scalar_tensor(static_cast<int64_t>(i), at::kLong); }
};

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Runs an evaluation epoch with gather_for_metrics and returns what the main process collected.
template <class Accelerator>
std::vector<int64_t> gathered_epoch(Accelerator& accelerator, int64_t samples, int64_t batch) {
  auto loader = accelerator.prepare(acc::DataLoader(Indices{samples}, batch));
  std::vector<int64_t> seen;
  for (auto& b : loader) {
    const auto all = accelerator.gather_for_metrics(b);
    const auto values = int_values(all);
    seen.insert(seen.end(), values.begin(), values.end());
  }
  return seen;
}

}  // namespace

TEST_CASE("gather_for_metrics returns exactly the dataset for awkward sizes, every epoch") {
  with_accelerator([](auto& accelerator) {
    for (const auto& [samples, batch] :
         std::vector<std::pair<int64_t, int64_t>>{{10, 3}, {1, 2}, {7, 1}, {23, 4}, {12, 2}}) {
      CAPTURE(samples);
      CAPTURE(batch);
      auto seen = gathered_epoch(accelerator, samples, batch);
      std::sort(seen.begin(), seen.end());  // the Shuffled sampler orders them; none may repeat
      CHECK(seen == iota(samples));
    }
  });
}

TEST_CASE("gather_for_metrics without even batches gathers uneven last batches as they are") {
  with_accelerator([](auto& accelerator) {
    accelerator.set_even_batches(false);
    const int64_t samples = 3 * accelerator.num_processes() - 2;  // one batch per rank, the last of 1 sample
    auto seen = gathered_epoch(accelerator, samples, 3);
    accelerator.set_even_batches(true);
    std::sort(seen.begin(), seen.end());
    CHECK(seen == iota(samples));
  });
}

TEST_CASE("the ranks' batches cover the dataset; rank 0's seed decides the shared shuffle") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    // every rank asks for its own seed: prepare makes them all use rank 0's
    auto loader = accelerator.prepare(acc::DataLoader(Indices{24}, acc::DataLoaderOptions(2).seed(100 + rank)));
    for (int epoch = 0; epoch < 2; ++epoch) {
      std::vector<int64_t> mine;
      for (auto& b : loader) {
        const auto v = int_values(b);
        mine.insert(mine.end(), v.begin(), v.end());
      }
      const auto all = accelerator.gather_object(mine);
      // rank r read batches r, r + world, ...: interleaving them rebuilds the shuffled order
      std::vector<int64_t> order;
      for (std::size_t i = 0; i < all[0].size(); i += 2)
        for (int r = 0; r < world; ++r)
          order.insert(order.end(), all[static_cast<std::size_t>(r)].begin() + i,
                       all[static_cast<std::size_t>(r)].begin() + i + 2);
      order.resize(24);
      CHECK(order == acc::Shuffled::indices(24, 100, epoch));
    }
  });
}

TEST_CASE("without even batches each sample is read exactly once across ranks") {
  acc::ProcessEnvironment env = acc::ProcessEnvironment::from_environment();
  with_accelerator([&](auto& accelerator) {
    // the same sharding the prepared loader would use, with even_batches off
    for (const auto& [samples, batch] : std::vector<std::pair<int64_t, int64_t>>{{10, 3}, {1, 2}, {23, 4}}) {
      CAPTURE(samples);
      auto loader =
          acc::DataLoader(Indices{samples}, batch)
              .template placed<acc::Sequential>(
                  {acc::Sharding{env.rank, env.world_size, /*even_batches=*/false}, accelerator.device(), 0, nullptr});
      std::vector<int64_t> mine;
      for (auto& b : loader) {
        const auto v = int_values(b);
        mine.insert(mine.end(), v.begin(), v.end());
      }
      std::vector<int64_t> all;
      for (const auto& part : accelerator.gather_object(mine)) all.insert(all.end(), part.begin(), part.end());
      std::sort(all.begin(), all.end());
      CHECK(all == iota(samples));
    }
  });
}

TEST_CASE("gather_for_metrics drops only the duplicates of the loader that produced the batch") {
  with_accelerator([](auto& accelerator) {
    // 10 samples in batches of 4 on 2 ranks repeat 6; 7 in batches of 2 repeat 1.
    auto train = accelerator.prepare(acc::DataLoader(Indices{10}, 4));
    auto evaluation = accelerator.prepare(acc::DataLoader(Indices{7}, 2));
    const auto train_order = acc::Shuffled::indices(10, 0, 0);
    std::vector<int64_t> trained, evaluated;
    for (auto& batch : train) {
      if (evaluated.empty())  // an evaluation in the middle of the training epoch
        for (auto& b : evaluation) {
          const auto values = int_values(accelerator.gather_for_metrics(b));
          evaluated.insert(evaluated.end(), values.begin(), values.end());
        }
      const auto values = int_values(accelerator.gather_for_metrics(batch));
      trained.insert(trained.end(), values.begin(), values.end());
    }
    CHECK(evaluated == acc::Shuffled::indices(7, 0, 0));
    CHECK(trained == train_order);
    // outside any loader nothing is dropped
    const auto everything = at::arange(10, at::TensorOptions(accelerator.device()).dtype(at::kLong));
    const auto mine = accelerator.split_between_processes(everything);
    CHECK(int_values(accelerator.gather_for_metrics(mine)) == iota(10));
  });
}
