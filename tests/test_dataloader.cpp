#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/data/dataloader.hpp>

#include <torch/data/datasets/tensor.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <tuple>
#include <vector>

namespace {

// Example i is the scalar tensor i, so a batch shows exactly which indices it holds.
struct Indices {
  int64_t count;
  std::size_t size() const { return static_cast<std::size_t>(count); }
  at::Tensor get(std::size_t i) const { return at::tensor(static_cast<int64_t>(i)); }
};

std::vector<int64_t> values(const at::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

template <class Loader>
std::vector<std::vector<int64_t>> epoch(Loader& loader) {
  std::vector<std::vector<int64_t>> out;
  for (auto& batch : loader) out.push_back(values(batch));
  return out;
}

using Plan = std::vector<std::vector<int64_t>>;

Plan plan(int64_t n, int64_t batch, acc::Sharding sharding, bool drop_last = false) {
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  return acc::detail::plan_batches(order, acc::DataLoaderOptions(batch).drop_last(drop_last), sharding).batches;
}

}  // namespace

TEST_CASE("sequential batches in order, last one partial") {
  acc::DataLoader loader(Indices{7}, 3);
  CHECK(loader.size() == 3);
  CHECK((epoch(loader) == Plan{{0, 1, 2}, {3, 4, 5}, {6}}));
}

TEST_CASE("drop_last drops the partial batch") {
  acc::DataLoader loader(Indices{7}, acc::DataLoaderOptions(3).drop_last(true));
  CHECK(loader.size() == 2);
  CHECK((epoch(loader) == Plan{{0, 1, 2}, {3, 4, 5}}));
}

TEST_CASE("an empty dataset gives no batches") {
  acc::DataLoader loader(Indices{0}, 4);
  CHECK(loader.size() == 0);
  CHECK(epoch(loader).empty());
}

TEST_CASE("batch_size below 1 is an error that names the option") {
  acc::DataLoader loader(Indices{4}, 0);
  CHECK_THROWS_WITH_AS(loader.begin(), "DataLoaderOptions::batch_size is 0; it must be at least 1", acc::Error);
}

TEST_CASE("shuffled order: a permutation, fixed by seed and epoch, new each epoch") {
  const auto a = acc::Shuffled::indices(50, 7, 0);
  CHECK(a == acc::Shuffled::indices(50, 7, 0));
  CHECK(a != acc::Shuffled::indices(50, 7, 1));
  CHECK(a != acc::Shuffled::indices(50, 8, 0));
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == acc::Sequential::indices(50, 0, 0));
  CHECK(a != sorted);
}

TEST_CASE("a shuffled loader reshuffles each epoch, and set_epoch replays an epoch") {
  auto loader = acc::DataLoader(Indices{20}, acc::DataLoaderOptions(5).seed(3))
                    .placed<acc::Shuffled>({acc::Sharding{}, c10::Device(c10::kCPU), 3, nullptr});
  const auto first = epoch(loader);
  CHECK(loader.epoch() == 0);
  const auto second = epoch(loader);
  CHECK(loader.epoch() == 1);
  CHECK(first != second);
  loader.set_epoch(0);
  CHECK(epoch(loader) == first);
  std::vector<int64_t> all;
  for (const auto& b : second) all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  CHECK(all == acc::Sequential::indices(20, 0, 0));
}

TEST_CASE("skip_first_batches resumes mid-epoch, then epochs are whole again") {
  acc::DataLoader loader(Indices{10}, 3);
  auto resumed = loader.skip_first_batches(2);
  CHECK((epoch(resumed) == Plan{{6, 7, 8}, {9}}));
  CHECK(epoch(resumed).size() == 4);
}

TEST_CASE("default collate stacks tensors, examples, tuples and maps") {
  acc::DefaultCollate collate;
  const std::vector<at::Tensor> tensors{at::ones({2}), at::zeros({2})};
  CHECK((collate(tensors).sizes() == at::IntArrayRef{2, 2}));

  using Example = torch::data::Example<>;
  const std::vector<Example> examples{{at::ones({3}), at::tensor(int64_t{1})},
                                      {at::zeros({3}), at::tensor(int64_t{0})}};
  const auto batch = collate(examples);
  CHECK((batch.data.sizes() == at::IntArrayRef{2, 3}));
  CHECK((values(batch.target) == std::vector<int64_t>{1, 0}));

  const std::vector<std::tuple<at::Tensor, int64_t>> tuples{{at::ones({4}), 5}, {at::ones({4}), 6}};
  const auto [stacked, numbers] = collate(tuples);
  CHECK((stacked.sizes() == at::IntArrayRef{2, 4}));
  CHECK((values(numbers) == std::vector<int64_t>{5, 6}));

  const std::vector<std::map<std::string, at::Tensor>> maps{{{"x", at::ones({1})}}, {{"x", at::zeros({1})}}};
  CHECK((collate(maps).at("x").sizes() == at::IntArrayRef{2, 1}));
}

TEST_CASE("a custom collate function and a libtorch TensorDataset") {
  auto data = at::arange(12, at::kLong).reshape({6, 2});
  auto sum_collate = [](const std::vector<torch::data::TensorExample>& examples) {
    int64_t total = 0;
    for (const auto& e : examples) total += e.data.sum().item<int64_t>();
    return total;
  };
  acc::DataLoader loader(torch::data::datasets::TensorDataset(data), 4, sum_collate);
  std::vector<int64_t> sums;
  for (auto& s : loader) sums.push_back(s);
  CHECK((sums == std::vector<int64_t>{0 + 1 + 2 + 3 + 4 + 5 + 6 + 7, 8 + 9 + 10 + 11}));
}

TEST_CASE("sharding: rank r takes batches r, r+N, ...") {
  CHECK((plan(12, 2, {0, 3}) == Plan{{0, 1}, {6, 7}}));
  CHECK((plan(12, 2, {1, 3}) == Plan{{2, 3}, {8, 9}}));
  CHECK((plan(12, 2, {2, 3}) == Plan{{4, 5}, {10, 11}}));
}

TEST_CASE("even batches: 10 samples, batch 3, 4 ranks; the last batch is completed from the start") {
  CHECK((plan(10, 3, {0, 4}) == Plan{{0, 1, 2}}));
  CHECK((plan(10, 3, {3, 4}) == Plan{{9, 0, 1}}));
  // 1 sample, 2 ranks: both ranks get a batch, cycled from the only sample.
  CHECK((plan(1, 2, {0, 2}) == Plan{{0, 0}}));
  CHECK((plan(1, 2, {1, 2}) == Plan{{0, 0}}));
  // 5 batches over 4 ranks: three more batches ([0,1], [2,3], [4,5]) cycle from the start.
  CHECK((plan(10, 2, {1, 4}) == Plan{{2, 3}, {0, 1}}));
  CHECK((plan(10, 2, {3, 4}) == Plan{{6, 7}, {4, 5}}));
}

TEST_CASE("the plan counts the samples that even batches repeated") {
  std::vector<int64_t> order(10);
  std::iota(order.begin(), order.end(), 0);
  CHECK(acc::detail::plan_batches(order, 3, {0, 4}).duplicates == 2);
  CHECK(acc::detail::plan_batches(order, 2, {0, 4}).duplicates == 6);
  CHECK(acc::detail::plan_batches(order, 2, {0, 4, false}).duplicates == 0);
  CHECK(acc::detail::plan_batches(order, 3, {0, 1}).duplicates == 0);
}

TEST_CASE("without even batches ranks may get different counts and a partial batch") {
  CHECK((plan(10, 3, {0, 4, false}) == Plan{{0, 1, 2}}));
  CHECK((plan(10, 3, {3, 4, false}) == Plan{{9}}));
  CHECK((plan(10, 2, {0, 4, false}) == Plan{{0, 1}, {8, 9}}));
  CHECK((plan(10, 2, {1, 4, false}) == Plan{{2, 3}}));
}

TEST_CASE("drop_last with even batches keeps only whole rounds") {
  CHECK((plan(10, 3, {0, 4}, true).empty()));
  CHECK((plan(14, 3, {0, 2}, true) == Plan{{0, 1, 2}, {6, 7, 8}}));
  CHECK((plan(14, 3, {1, 2}, true) == Plan{{3, 4, 5}, {9, 10, 11}}));
}

// Found: without even batches, drop_last dropped only a partial batch, so 5 batches over 4 ranks
// gave rank 0 a second one, whose backward waited for ranks that had none.
TEST_CASE("drop_last without even batches also keeps only whole rounds: every rank gets as many") {
  CHECK((plan(10, 2, {0, 4, false}, true) == Plan{{0, 1}}));
  for (int rank = 1; rank < 4; ++rank) CHECK(plan(10, 2, {rank, 4, false}, true).size() == 1);
  CHECK((plan(14, 3, {1, 2, false}, true) == Plan{{3, 4, 5}, {9, 10, 11}}));
  // split_batches: every whole global batch is a round.
  CHECK((plan(10, 4, {1, 2, false, true}, true) == Plan{{2, 3}, {6, 7}}));
}

TEST_CASE("split batches: each rank takes its slice of every global batch") {
  CHECK((plan(8, 4, {0, 2, true, true}) == Plan{{0, 1}, {4, 5}}));
  CHECK((plan(8, 4, {1, 2, true, true}) == Plan{{2, 3}, {6, 7}}));
  CHECK((plan(6, 4, {1, 2, true, true}) == Plan{{2, 3}, {0, 1}}));  // last batch [4,5,0,1]
  // Without even batches a short last batch is cut in slices of batch_size / processes from the
  // first process on, as Accelerate cuts it: [4] goes to rank 0 (it went to rank 3).
  CHECK((plan(5, 4, {0, 4, false, true}) == Plan{{0}, {4}}));
  for (int rank = 1; rank < 4; ++rank) CHECK(plan(5, 4, {rank, 4, false, true}).size() == 1);
  CHECK((plan(7, 4, {1, 2, false, true}) == Plan{{2, 3}, {6}}));
  CHECK_THROWS_WITH_AS(plan(8, 3, acc::Sharding{0, 2, true, true}),
                       "split_batches needs a batch_size divisible by the number of processes, but batch_size is 3 "
                       "and there are 2 processes; choose a multiple of 2 or turn split_batches off",
                       acc::Error);
}

TEST_CASE("the union of all ranks' batches covers the dataset; shuffled order is the same on every rank") {
  for (const int world : {2, 3, 4}) {
    for (const bool even : {true, false}) {
      std::multiset<int64_t> seen;
      std::size_t first_count = 0;
      for (int rank = 0; rank < world; ++rank) {
        auto loader =
            acc::DataLoader(Indices{23}, acc::DataLoaderOptions(4).seed(11))
                .placed<acc::Shuffled>({acc::Sharding{rank, world, even}, c10::Device(c10::kCPU), 11, nullptr});
        const auto batches = epoch(loader);
        if (rank == 0) first_count = batches.size();
        if (even) CHECK(batches.size() == first_count);
        for (const auto& b : batches) seen.insert(b.begin(), b.end());
      }
      for (int64_t i = 0; i < 23; ++i) CHECK(seen.count(i) >= 1);
      if (!even) CHECK(seen.size() == 23);
    }
  }
}

namespace {

// A stream of the numbers 0 .. count-1.
struct Counter {
  int64_t count;
  int64_t next_value = 0;
  std::optional<at::Tensor> next() {
    if (next_value == count) return std::nullopt;
    return at::tensor(next_value++);
  }
  void reset() { next_value = 0; }
};

struct OneShot {
  int64_t left = 2;
  std::optional<at::Tensor> next() {
    if (left == 0) return std::nullopt;
    return at::tensor(left--);
  }
};

template <class Dataset>
Plan stream_epoch(Dataset dataset, acc::DataLoaderOptions options, acc::Sharding sharding) {
  auto loader = acc::DataLoader(dataset, options)
                    .template placed<acc::Sequential>({sharding, c10::Device(c10::kCPU), 0, nullptr});
  return epoch(loader);
}

}  // namespace

TEST_CASE("a streaming dataset: batches in stream order, a new pass per epoch through reset()") {
  acc::DataLoader loader(Counter{7}, 3);
  CHECK((epoch(loader) == Plan{{0, 1, 2}, {3, 4, 5}, {6}}));
  CHECK((epoch(loader) == Plan{{0, 1, 2}, {3, 4, 5}, {6}}));
  auto resumed = loader.skip_first_batches(1);
  CHECK((epoch(resumed) == Plan{{3, 4, 5}, {6}}));
  CHECK_THROWS_WITH_AS(loader.size(), doctest::Contains("no size()"), acc::Error);
  acc::DataLoader once(OneShot{}, 1);
  CHECK((epoch(once) == Plan{{2}, {1}}));
  CHECK_THROWS_WITH_AS(epoch(once), doctest::Contains("has no reset()"), acc::Error);
}

// Without dispatch_batches (which needs a communicator: tests/dist/test_data.cpp), every rank
// reads the stream.
TEST_CASE("a stream sharded across ranks: each rank keeps its batch of every round, like a map-style loader") {
  for (const int world : {2, 3, 4}) {
    for (const bool even : {true, false}) {
      for (int rank = 0; rank < world; ++rank) {
        CAPTURE(world);
        CAPTURE(rank);
        CAPTURE(even);
        const acc::Sharding sharding{rank, world, even, /*split_batches=*/false, /*dispatch_batches=*/false};
        CHECK(stream_epoch(Counter{10}, 3, sharding) == plan(10, 3, sharding));
        CHECK(stream_epoch(Counter{10}, 3, sharding) == plan(10, 3, sharding));
        CHECK(stream_epoch(Counter{10}, 2, sharding) == plan(10, 2, sharding));
        const auto dropping = acc::DataLoaderOptions(2).drop_last(true);
        CHECK(stream_epoch(Counter{10}, dropping, sharding) == plan(10, 2, sharding, true));
        if (world != 3) {  // split_batches needs a batch_size divisible by the processes
          const acc::Sharding split{rank, world, even, /*split_batches=*/true, /*dispatch_batches=*/false};
          CHECK(stream_epoch(Counter{5}, 4, split) == plan(5, 4, split));
          CHECK(stream_epoch(Counter{10}, acc::DataLoaderOptions(4).drop_last(true), split) ==
                plan(10, 4, split, true));
        }
      }
    }
  }
  // A stream placed by hand for several processes, without the communicator dispatching needs.
  CHECK_THROWS_WITH_AS(stream_epoch(Counter{6}, 4, acc::Sharding{1, 2}),
                       doctest::Contains("prepare the loader with Accelerator::prepare"), acc::Error);
}
