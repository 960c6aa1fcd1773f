#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <tuple>

namespace {

at::TensorOptions longs(c10::Device device) { return at::TensorOptions(device).dtype(at::kLong); }

std::vector<int64_t> iota(int64_t n, int64_t start = 0) {
  std::vector<int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

// The values each rank r contributes as f(r), concatenated in rank order.
template <class F>
std::vector<int64_t> per_rank(int world, F&& f) {
  std::vector<int64_t> v;
  for (int r = 0; r < world; ++r)
    for (const auto x : f(r)) v.push_back(x);
  return v;
}

}  // namespace

TEST_CASE("gather concatenates every rank's tensor in rank order, also when first dimensions differ") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const auto mine = at::full({rank + 1, 2}, rank, longs(accelerator.device()));
    const auto gathered = accelerator.gather(mine);
    CHECK(gathered.size(0) == world * (world + 1) / 2);
    CHECK(gathered.size(1) == 2);
    CHECK((gathered.device() == accelerator.device()));
    CHECK(int_values(gathered) == per_rank(world, [](int r) { return std::vector<int64_t>(2 * (r + 1), r); }));
    // a scalar becomes one element per rank
    const auto scalars = accelerator.gather(at::scalar_tensor(rank * 10, longs(accelerator.device())));
    CHECK(int_values(scalars) == per_rank(world, [](int r) { return std::vector<int64_t>{10 * r}; }));
    // a rank with no rows at all
    const auto some_empty = accelerator.gather(at::full({rank % 2, 3}, rank, longs(accelerator.device())));
    CHECK(some_empty.size(0) == world / 2);
  });
}

TEST_CASE("gather of nested containers keeps their structure") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const auto device = accelerator.device();
    const std::map<std::string, std::vector<at::Tensor>> nested{
        {"a", {at::arange(2, longs(device)) + rank}},
        {"b", {at::full({1}, rank, longs(device)), at::ones({3}, longs(device))}}};
    const auto gathered = accelerator.gather(nested);
    REQUIRE(gathered.at("b").size() == 2);
    CHECK(int_values(gathered.at("a")[0]) == per_rank(world, [](int r) { return std::vector<int64_t>{r, r + 1}; }));
    CHECK(int_values(gathered.at("b")[0]) == iota(world));
    CHECK(gathered.at("b")[1].size(0) == 3 * world);
    const std::tuple<at::Tensor, std::pair<at::Tensor, at::Tensor>> tuple{
        at::full({1}, rank, longs(device)), {at::zeros({2, 2}, longs(device)), at::ones({1}, longs(device))}};
    const auto [first, pair] = accelerator.gather(tuple);
    CHECK(int_values(first) == iota(world));
    CHECK(pair.first.sizes() == at::IntArrayRef{2 * world, 2});
    CHECK(pair.second.size(0) == world);
  });
}

TEST_CASE("gather of tensors that differ beyond the first dimension fails on every rank, naming the shapes") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index();
    const auto odd = at::zeros({2, rank == 1 ? 3 : 2}, longs(accelerator.device()));
    CHECK_THROWS_WITH_AS(accelerator.gather(odd),
                         doctest::Contains("may differ only in their first dimension, and must have the same dtype"),
                         acc::Error);
    accelerator.wait_for_everyone();  // the job is still usable afterwards
  });
}

TEST_CASE("reduce: sum, mean, max over ranks, nested") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const auto device = accelerator.device();
    const std::vector<at::Tensor> values{at::full({2}, rank + 1, longs(device)),
                                         at::full({1}, static_cast<double>(rank), at::TensorOptions(device))};
    const auto sums = accelerator.reduce(values);
    CHECK(int_values(sums[0]) == std::vector<int64_t>(2, world * (world + 1) / 2));
    CHECK(sums[1].item().toDouble() == doctest::Approx(world * (world - 1) / 2.0));
    CHECK(int_values(values[0]) == std::vector<int64_t>(2, rank + 1));  // input untouched
    CHECK(accelerator.reduce(values[1], acc::ReduceOp::mean).item().toDouble() == doctest::Approx((world - 1) / 2.0));
    CHECK(int_values(accelerator.reduce(values[0], acc::ReduceOp::max)) == std::vector<int64_t>(2, world));
    CHECK_THROWS_WITH_AS(accelerator.reduce(values[0], acc::ReduceOp::mean),
                         "reduce with mean needs floating-point tensors; use sum, or convert with .to(at::kFloat)",
                         acc::Error);
  });
}

TEST_CASE("broadcast from the last rank; the other ranks' shapes do not matter") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const int last = world - 1;
    const auto mine =
        rank == last ? at::arange(5, longs(accelerator.device())) : at::zeros({rank}, longs(accelerator.device()));
    const std::map<std::string, at::Tensor> value{{"x", mine}};
    const auto received = accelerator.broadcast(value, last);
    CHECK(int_values(received.at("x")) == iota(5));
  });
}

TEST_CASE("pad_across_processes pads to the longest, at the end or at the start, along any dim") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const auto mine = at::full({rank + 1}, 7, longs(accelerator.device()));
    const auto padded = accelerator.pad_across_processes(mine, 0, -1);
    std::vector<int64_t> expected(static_cast<std::size_t>(rank + 1), 7);
    expected.resize(static_cast<std::size_t>(world), -1);
    CHECK(int_values(padded) == expected);
    const auto first = accelerator.pad_across_processes(mine, 0, -1, /*pad_first=*/true);
    std::reverse(expected.begin(), expected.end());
    CHECK(int_values(first) == expected);
    const auto wide = accelerator.pad_across_processes(at::zeros({2, rank + 1}, longs(accelerator.device())), 1);
    CHECK(wide.sizes() == at::IntArrayRef{2, world});
  });
}

TEST_CASE("gather_object and broadcast_object carry strings and plain data") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const auto names =
        accelerator.gather_object(std::string(static_cast<std::size_t>(rank), 'x') + "rank" + std::to_string(rank));
    REQUIRE(names.size() == static_cast<std::size_t>(world));
    for (int r = 0; r < world; ++r)
      CHECK(names[static_cast<std::size_t>(r)] ==
            std::string(static_cast<std::size_t>(r), 'x') + "rank" + std::to_string(r));
    const auto lists = accelerator.gather_object(iota(rank));
    for (int r = 0; r < world; ++r) CHECK(lists[static_cast<std::size_t>(r)] == iota(r));
    struct Point {
      int x;
      double y;
    };
    const auto point = accelerator.broadcast_object(Point{rank, 0.5 * rank}, world - 1);
    CHECK(point.x == world - 1);
    CHECK(point.y == doctest::Approx(0.5 * (world - 1)));
    CHECK(accelerator.broadcast_object(std::string(rank == 0 ? "from rank 0" : "ignored")) == "from rank 0");
  });
}

TEST_CASE("main_process_first: the main process finishes its scope before the others enter theirs") {
  with_accelerator([](auto& accelerator) {
    const auto marker =
        std::filesystem::temp_directory_path() / ("acc_main_first_" + accelerator.environment().master_addr + "_" +
                                                  std::to_string(accelerator.environment().master_port));
    {
      auto first = accelerator.main_process_first();
      if (accelerator.is_main_process()) {
        std::filesystem::remove(marker);
        std::ofstream(marker) << "written by rank 0";
      } else {
        CHECK(std::filesystem::exists(marker));
      }
    }
    accelerator.wait_for_everyone();
    if (accelerator.is_main_process()) std::filesystem::remove(marker);
  });
}

TEST_CASE("split_between_processes: contiguous shares, the first ranks one more; padding evens them") {
  with_accelerator([](auto& accelerator) {
    const int world = accelerator.num_processes();
    const auto items = iota(10);
    const auto share = accelerator.split_between_processes(items);
    const auto shares = accelerator.gather_object(share);
    std::vector<int64_t> joined;
    for (const auto& s : shares) {
      CHECK(static_cast<int64_t>(s.size()) >= 10 / world);
      CHECK(static_cast<int64_t>(s.size()) <= 10 / world + 1);
      joined.insert(joined.end(), s.begin(), s.end());
    }
    CHECK(joined == items);
    const auto padded = accelerator.split_between_processes(items, /*apply_padding=*/true);
    CHECK(static_cast<int64_t>(padded.size()) == (10 + world - 1) / world);
    const auto rows = accelerator.split_between_processes(at::arange(10, longs(accelerator.device())), true);
    const int64_t longest = (10 + world - 1) / world;
    CHECK(int_values(accelerator.gather(rows)) == per_rank(world, [&](int r) {
            const int64_t size = 10 / world + (r < 10 % world ? 1 : 0);
            const int64_t begin = r * (10 / world) + std::min<int64_t>(r, 10 % world);
            auto v = iota(size, begin);
            v.resize(static_cast<std::size_t>(longest), v.back());
            return v;
          }));
  });
}

TEST_CASE("bfloat16 and float16 tensors go through every collective, exactly where the result is representable") {
  with_accelerator([](auto& accelerator) {
    auto& comm = accelerator.strategy().comm();
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const auto device = accelerator.device();
    // Small multiples of powers of two: every partial sum over up to 4 ranks (factors 1, 3, 6,
    // 10) and every mean has at most 4 significant bits, so both 16-bit types hold them exactly
    // and the results must equal the float64 reference bit for bit, whatever the summation order.
    const auto base = at::tensor(std::vector<double>{1.0, -2.0, 0.5, 64.0, 0.0, 8.0}, at::kDouble);
    const auto same = [](const at::Tensor& actual, const at::Tensor& expected) {
      return at::equal(actual.cpu().to(at::kDouble), expected.to(at::kDouble));
    };
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      CAPTURE(dtype);
      const auto on_device = at::TensorOptions(device).dtype(dtype);
      const auto mine = (base * (rank + 1)).to(on_device);
      const double rank_sum = world * (world + 1) / 2.0;

      auto summed = mine.clone();
      comm.all_reduce(summed, acc::ReduceOp::sum);
      CHECK((summed.scalar_type() == dtype));
      CHECK(same(summed, base * rank_sum));

      auto averaged = mine.clone();
      comm.all_reduce_async(averaged, acc::ReduceOp::mean).wait();
      CHECK(same(averaged, base * (rank_sum / world)));

      auto largest = mine.clone();
      comm.all_reduce(largest, acc::ReduceOp::max);
      CHECK(same(largest, at::maximum(base, base * world)));

      auto sent = mine.clone();
      comm.broadcast(sent, world - 1);
      CHECK(same(sent, base * world));

      const auto pieces = comm.all_gather(mine);
      REQUIRE(pieces.size() == static_cast<std::size_t>(world));
      for (int r = 0; r < world; ++r) {
        CHECK((pieces[static_cast<std::size_t>(r)].scalar_type() == dtype));
        CHECK(same(pieces[static_cast<std::size_t>(r)], base * (r + 1)));
      }

      auto side_by_side = at::empty({world * base.numel()}, on_device);
      comm.all_gather_into(side_by_side, mine);
      CHECK(same(side_by_side.view({world, -1}).select(0, world - 1), base * world));

      // Each rank gets its own slice of the sum: rank r's slice is base * (r + 1) summed over
      // the ranks.
      auto scattered_input =
          (base.repeat({world}) * (rank + 1) * at::arange(1, world + 1, at::kDouble).repeat_interleave(base.numel()))
              .to(on_device);
      auto my_slice = at::empty({base.numel()}, on_device);
      comm.reduce_scatter(my_slice, scattered_input, acc::ReduceOp::sum);
      CHECK(same(my_slice, base * rank_sum * (rank + 1)));

      // Through the tensor-tree API as well.
      CHECK(same(accelerator.reduce(mine), base * rank_sum));
      CHECK(same(accelerator.gather(mine).view({world, -1}).select(0, 0), base));
    }
  });
}
