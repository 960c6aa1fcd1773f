#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
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

namespace {

// Example i: its index and i % 3 + 1 values, so that batches hold vectors of tensors of several
// shapes; counts the examples it hands out.
struct CountedRagged {
  int64_t count;
  std::shared_ptr<int64_t> reads = std::make_shared<int64_t>(0);
  std::size_t size() const { return static_cast<std::size_t>(count); }
  std::pair<int64_t, at::Tensor> get(std::size_t i) const {
    ++*reads;
    const auto index = static_cast<int64_t>(i);
    return {index, at::full({index % 3 + 1}, static_cast<double>(index), at::kDouble)};
  }
};

// A batch that exercises every part of a dispatched batch's layout: a stacked tensor, a vector
// whose length is the batch's, tensors of differing shapes, and a string-keyed map.
using RaggedBatch = std::pair<at::Tensor, std::vector<std::map<std::string, at::Tensor>>>;
struct CollateRagged {
  RaggedBatch operator()(const std::vector<std::pair<int64_t, at::Tensor>>& examples) const {
    std::vector<int64_t> indices;
    std::vector<std::map<std::string, at::Tensor>> values;
    for (const auto& [index, value] : examples) {
      indices.push_back(index);
      values.push_back({{"values", value}, {"is_even", at::scalar_tensor(index % 2 == 0, at::kBool)}});
    }
    return {at::tensor(indices, at::kLong), values};
  }
};

// A batch as plain numbers: the indices, then every value and flag in order.
std::vector<double> numbers_of(const RaggedBatch& batch) {
  std::vector<double> out;
  for (const auto i : int_values(batch.first)) out.push_back(static_cast<double>(i));
  for (const auto& fields : batch.second) {
    const auto values = fields.at("values").cpu().contiguous();
    out.push_back(static_cast<double>(values.numel()));
    out.insert(out.end(), values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
    out.push_back(fields.at("is_even").cpu().item<bool>() ? 1 : 0);
  }
  return out;
}

// A stream of the numbers 0 .. count-1 that counts what it hands out.
struct CountedStream {
  int64_t count;
  int64_t next_value = 0;
  std::shared_ptr<int64_t> reads = std::make_shared<int64_t>(0);
  std::optional<at::Tensor> next() {
    if (next_value == count) return std::nullopt;
    ++*reads;
    return at::scalar_tensor(next_value++, at::kLong);
  }
  void reset() { next_value = 0; }
};

// The loader placed for this process as Accelerator::prepare places it, with `sharding`.
template <class Accelerator, class Loader>
auto placed(Accelerator& accelerator, const Loader& loader, const acc::Sharding& sharding) {
  auto& comm = accelerator.strategy().comm();
  const acc::MainProcessBroadcast broadcast{[&comm](at::Tensor& t) { comm.broadcast(t, 0); }, comm.device()};
  return loader.template placed<acc::Sequential>({sharding, accelerator.device(), 0, nullptr, broadcast});
}

// This process's batches in two epochs (the first resumed after one batch), as numbers.
template <class Accelerator, class Loader, class Numbers>
std::vector<std::vector<double>> two_epochs(Accelerator& accelerator, Loader& loader, Numbers numbers) {
  std::vector<std::vector<double>> batches;
  for (int epoch = 0; epoch < 2; ++epoch)
    for (auto& batch : epoch == 0 ? loader.skip_first_batches(1) : loader) {
      acc::detail::for_each_tensor(batch, [&](const at::Tensor& t) { CHECK(t.device() == accelerator.device()); });
      batches.push_back(numbers(batch));
    }
  return batches;
}

}  // namespace

TEST_CASE("dispatch_batches: each process gets the batches it would have read, and only the main process reads") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    // 25 samples end mid-round, 12 * world on a round's boundary, 1 before the first round is full
    for (const int64_t samples : {int64_t{25}, int64_t{12} * world, int64_t{1}}) {
      for (const bool even : {true, false}) {
        for (const bool split : {false, true}) {
          for (const bool drop_last : {false, true}) {
            CAPTURE(samples);
            CAPTURE(even);
            CAPTURE(split);
            CAPTURE(drop_last);
            // 12 is a multiple of 1 to 4 processes, as split_batches needs
            const auto options = acc::DataLoaderOptions(split ? 12 : 2).drop_last(drop_last);
            const auto run = [&](bool dispatch) {
              CountedRagged dataset{samples};
              auto loader = placed(accelerator, acc::DataLoader(dataset, options, CollateRagged{}),
                                   acc::Sharding{rank, world, even, split, dispatch});
              return std::pair(two_epochs(accelerator, loader, numbers_of), *dataset.reads);
            };
            const auto [own, own_reads] = run(false);
            const auto [sent, sent_reads] = run(true);
            CHECK(sent == own);
            const auto all_reads = accelerator.gather_object(own_reads);
            int64_t everyone = 0;
            for (const auto reads : all_reads) everyone += reads;
            // the main process reads what all processes read between them, the others nothing
            CHECK(sent_reads == (rank == 0 ? everyone : 0));
          }
        }
      }
    }
  });
}

TEST_CASE("dispatch_batches: a prepared stream is read by the main process alone, unless turned off") {
  with_accelerator([](auto& accelerator) {
    const bool main_process = accelerator.is_main_process();
    const int world = accelerator.num_processes();
    const auto numbers = [](const at::Tensor& batch) {
      std::vector<double> out;
      for (const auto v : int_values(batch)) out.push_back(static_cast<double>(v));
      return out;
    };
    for (const int64_t samples : {int64_t{17}, int64_t{3} * world}) {
      for (const bool even : {true, false}) {
        CAPTURE(samples);
        CAPTURE(even);
        accelerator.set_even_batches(even);
        const auto run = [&](std::optional<bool> dispatch) {
          CountedStream stream{samples};
          accelerator.set_dispatch_batches(dispatch);
          auto loader = accelerator.prepare(acc::DataLoader(stream, 3));
          accelerator.set_dispatch_batches(std::nullopt);
          return std::pair(two_epochs(accelerator, loader, numbers), *stream.reads);
        };
        const auto [own, own_reads] = run(false);
        const auto [sent, sent_reads] = run(std::nullopt);  // Accelerate's default dispatches streams
        CHECK(sent == own);
        CHECK(own_reads > 0);  // with dispatch off every process reads the stream
        CHECK(sent_reads == (main_process ? own_reads : 0));
      }
    }
    accelerator.set_even_batches(true);
  });
}

TEST_CASE("gather_for_metrics over dispatched loaders returns exactly the dataset") {
  with_accelerator([](auto& accelerator) {
    accelerator.set_dispatch_batches(true);
    for (const auto& [samples, batch] : std::vector<std::pair<int64_t, int64_t>>{{10, 3}, {1, 2}, {23, 4}}) {
      CAPTURE(samples);
      auto seen = gathered_epoch(accelerator, samples, batch);
      std::sort(seen.begin(), seen.end());
      CHECK(seen == iota(samples));
    }
    accelerator.set_dispatch_batches(std::nullopt);
  });
}
