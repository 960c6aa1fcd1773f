// Communicators over groups of ranks (acc::RankGroup): disjoint sub-groups, a sub-group beside the
// world communicator, and a sub-group's own timeout and debug mode, whose messages name the global
// rank. The pairs are {0, 1}, {2, 3}, ... (a last odd rank is a group of one). Run on 4 ranks by
// ctest dist/comm_groups_4_ranks: `acc_dist_worker --no-skip -ts=comm_groups` (Gloo, or NCCL with
// ACC_TEST_BACKEND=nccl).
#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include "../error_of.hpp"

#include <chrono>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// This rank's pair: {2k, 2k + 1}, or {2k} for a last odd rank.
acc::RankGroup pair_of(const acc::ProcessEnvironment& env) {
  const int first = env.rank - env.rank % 2;
  std::vector<int> ranks{first};
  if (first + 1 < env.world_size) ranks.push_back(first + 1);
  return acc::RankGroup(ranks, env.rank, env.world_size);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Calls fn(world communicator, env, device) on this rank's accelerator; fn makes the group
// communicators of the same type.
template <class Fn>
void with_world(Fn&& fn) {
  with_accelerator([&](auto& accelerator) {
    fn(accelerator.strategy().comm(), acc::ProcessEnvironment::from_environment(), accelerator.device());
    accelerator.wait_for_everyone();
  });
}

}  // namespace

TEST_SUITE("comm_groups" * doctest::skip()) {
  TEST_CASE("disjoint sub-groups run their collectives independently, in their own rank numbers") {
    with_world([](auto& world, const acc::ProcessEnvironment& env, c10::Device device) {
      using Comm = std::decay_t<decltype(world)>;
      const auto group = pair_of(env);
      Comm pair(env, acc::job_store(env), acc::ProcessGroupOptions(), group);
      CHECK(pair.rank() == env.rank % 2);
      CHECK(pair.world_size() == group.size());
      const auto floats = at::TensorOptions(device).dtype(at::kFloat);
      double members_sum = 0;  // sum of (r + 1) over the pair's global ranks r
      for (const int r : group.ranks()) members_sum += r + 1;

      auto summed = at::full({3}, env.rank + 1.0, floats);
      pair.all_reduce(summed, acc::ReduceOp::sum);
      CHECK(int_values(summed) == std::vector<int64_t>(3, static_cast<int64_t>(members_sum)));

      auto overlapped = at::full({2}, env.rank + 1.0, floats);
      auto pending = pair.all_reduce_async(overlapped, acc::ReduceOp::max);
      pending.wait();
      CHECK(int_values(overlapped) == std::vector<int64_t>(2, group.ranks().back() + 1));

      // Root 0 is the pair's first member, whatever its global rank.
      auto sent = at::full({1}, env.rank * 10.0, floats);
      pair.broadcast(sent, 0);
      CHECK(int_values(sent) == std::vector<int64_t>{group.ranks().front() * 10});

      const auto pieces = pair.all_gather(at::full({1}, env.rank * 1.0, floats));
      REQUIRE(pieces.size() == group.ranks().size());
      for (std::size_t i = 0; i < pieces.size(); ++i)
        CHECK(int_values(pieces[i]) == std::vector<int64_t>{group.ranks()[i]});

      auto input = at::full({group.size() * 2}, env.rank + 1.0, floats);
      auto slice = at::empty({2}, floats);
      pair.reduce_scatter(slice, input, acc::ReduceOp::sum);
      CHECK(int_values(slice) == std::vector<int64_t>(2, static_cast<int64_t>(members_sum)));
    });
  }

  TEST_CASE("a sub-group beside the world communicator: collectives interleave, two communicators over one group") {
    with_world([](auto& world, const acc::ProcessEnvironment& env, c10::Device device) {
      using Comm = std::decay_t<decltype(world)>;
      const auto floats = at::TensorOptions(device).dtype(at::kFloat);
      const auto group = pair_of(env);
      Comm first(env, acc::job_store(env), acc::ProcessGroupOptions(), group);
      Comm second(env, acc::job_store(env), acc::ProcessGroupOptions(), group);
      double members_sum = 0;
      for (const int r : group.ranks()) members_sum += r + 1;
      const double world_sum = env.world_size * (env.world_size + 1) / 2.0;
      for (int round = 0; round < 3; ++round) {
        auto in_world = at::full({4}, env.rank + 1.0, floats);
        auto in_first = in_world.clone();
        auto in_second = in_world.clone();
        auto world_done = world.all_reduce_async(in_world, acc::ReduceOp::sum);
        first.all_reduce(in_first, acc::ReduceOp::sum);
        auto second_done = second.all_reduce_async(in_second, acc::ReduceOp::max);
        world_done.wait();
        second_done.wait();
        CHECK(int_values(in_world) == std::vector<int64_t>(4, static_cast<int64_t>(world_sum)));
        CHECK(int_values(in_first) == std::vector<int64_t>(4, static_cast<int64_t>(members_sum)));
        CHECK(int_values(in_second) == std::vector<int64_t>(4, group.ranks().back() + 1));
      }
    });
  }

  TEST_CASE("a rank outside a group cannot build its communicator, and a group names each rank once") {
    const auto env = acc::ProcessEnvironment::from_environment();
    const int other = (env.rank + 1) % env.world_size;
    if (other != env.rank)
      CHECK(error_of([&] { acc::RankGroup({other}, env.rank, env.world_size); }) ==
            "rank " + std::to_string(env.rank) + " is not in the rank group [" + std::to_string(other) +
                "]: only the group's members build a communicator over it");
    CHECK(contains(error_of([&] {
                     acc::RankGroup({env.rank, env.rank}, env.rank, env.world_size);
                   }),
                   "must name each rank once, each from 0 to " + std::to_string(env.world_size - 1)));
  }

  TEST_CASE("a sub-group's timeout is its own, and its error names the global rank") {
    with_world([](auto& world, const acc::ProcessEnvironment& env, c10::Device device) {
      using Comm = std::decay_t<decltype(world)>;
      const auto floats = at::TensorOptions(device).dtype(at::kFloat);
      const auto group = pair_of(env);
      Comm pair(env, acc::job_store(env), acc::ProcessGroupOptions().timeout(3s), group);
      // In the last pair, the second member skips an all-reduce; the other pairs are unaffected.
      const bool faulty_pair = group.size() == 2 && group.ranks().back() == env.world_size - 1;
      auto tensor = at::ones({3}, floats);
      if (!faulty_pair) {
        pair.all_reduce(tensor, acc::ReduceOp::sum);
        pair.barrier();
        CHECK(int_values(tensor) == std::vector<int64_t>(3, group.size()));
      } else if (pair.rank() == 0) {
        const auto started = Clock::now();
        // Under NCCL the all-reduce only queues: the barrier's wait meets the watchdog's abort.
        const auto error = error_of([&] {
          pair.all_reduce(tensor, acc::ReduceOp::sum);
          pair.barrier();
        });
        const auto waited = Clock::now() - started;
        CAPTURE(error);
        CHECK(contains(error, "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                                  " (rank 0 of the group " + group.describe() +
                                  "): collective #1 all_reduce(sum) Float[3] did not complete within 3 s"));
        CHECK(waited >= 3s);
        CHECK(waited < 20s);
      }
      world.barrier();  // the skipping rank waits here, its pair communicator alive, while the other times out
    });
  }

  TEST_CASE("debug mode compares a sub-group's collectives among its members, naming global ranks") {
    with_world([](auto& world, const acc::ProcessEnvironment& env, c10::Device device) {
      using Comm = std::decay_t<decltype(world)>;
      const auto floats = at::TensorOptions(device).dtype(at::kFloat);
      const auto group = pair_of(env);
      if (group.size() < 2) return;
      Comm pair(env, acc::job_store(env), acc::ProcessGroupOptions().debug(true).timeout(30s), group);
      // The first pair disagrees (its second member broadcasts); the others agree.
      const bool disagree = group.ranks().front() == 0 && pair.rank() == 1;
      auto tensor = at::ones({2}, floats);
      const auto error = error_of([&] {
        if (disagree)
          pair.broadcast(tensor, 0);
        else
          pair.all_reduce(tensor, acc::ReduceOp::sum);
      });
      CAPTURE(error);
      if (group.ranks().front() == 0) {
        CHECK(contains(error, "debug mode: rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                                  " (rank " + std::to_string(pair.rank()) +
                                  " of the group [0, 1]): collective #1 is not the same on every rank:\n"
                                  "  rank 0: all_reduce(sum) Float[2]\n  rank 1: broadcast(root 0) Float[2]\n"));
      } else {
        CHECK(error.empty());
        CHECK(int_values(tensor) == std::vector<int64_t>(2, 2));
      }
    });
  }
}
