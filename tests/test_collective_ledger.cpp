#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/comm/collective_ledger.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/detail/torch_compat.hpp>
#include <acc/run.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

// A store that counts the calls made on it, to show what debug mode costs and what it does not.
class CountingStore : public c10d::Store {
 public:
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    ++calls;
    inner_->set(key, value);
  }
  std::vector<uint8_t> get(const std::string& key) override {
    ++calls;
    return inner_->get(key);
  }
  int64_t add(const std::string& key, int64_t value) override {
    ++calls;
    return inner_->add(key, value);
  }
  bool deleteKey(const std::string& key) override {
    ++calls;
    return inner_->deleteKey(key);
  }
  bool check(const std::vector<std::string>& keys) override {
    ++calls;
    return inner_->check(keys);
  }
  int64_t getNumKeys() override { return inner_->getNumKeys(); }
#if ACC_STORE_HAS_CLONE
  c10::intrusive_ptr<c10d::Store> clone() override {  // the clone shares this store's counts
    return c10::intrusive_ptr<c10d::Store>::reclaim_copy(this);
  }
#endif
  void wait(const std::vector<std::string>& keys) override {
    ++calls;
    inner_->wait(keys);
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    ++calls;
    inner_->wait(keys, timeout);
  }

  std::atomic<int> calls{0};

 private:
  c10::intrusive_ptr<c10d::HashStore> inner_ = c10::make_intrusive<c10d::HashStore>();
};

acc::ProcessGroupOptions options(bool debug, std::chrono::seconds timeout = 30s) {
  return acc::ProcessGroupOptions().debug(debug).timeout(timeout);
}

// Runs `call` as ranks 0 and 1 of a job on one store, at the same time; returns each rank's error.
template <class Call>
std::array<std::string, 2> on_two_ranks(const c10::intrusive_ptr<c10d::Store>& store, std::chrono::seconds timeout,
                                        Call&& call) {
  std::array<std::string, 2> errors;
  const auto rank = [&](int r) {
    acc::detail::CollectiveLedger ledger(acc::RankGroup::world(2, r), options(true, timeout), store);
    try {
      call(ledger, r);
    } catch (const acc::Error& e) {
      errors[static_cast<std::size_t>(r)] = e.what();
    }
  };
  std::thread other(rank, 1);
  rank(0);
  other.join();
  return errors;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("collectives are described by name, operation, dtype and shape") {
  CHECK(acc::detail::Collective("all_reduce", at::zeros({4, 3}), acc::ReduceOp::mean).describe() ==
        "all_reduce(mean) Float[4, 3]");
  CHECK(acc::detail::Collective("broadcast", at::zeros({10}, at::kLong), std::nullopt, 2).describe() ==
        "broadcast(root 2) Long[10]");
  CHECK(acc::detail::Collective("all_gather", at::zeros({})).describe() == "all_gather() Float[]");
  CHECK(acc::detail::Collective("barrier").describe() == "barrier()");
}

TEST_CASE("debug mode off numbers collectives without touching the store") {
  const auto store = c10::make_intrusive<CountingStore>();
  acc::detail::CollectiveLedger ledger(acc::RankGroup::world(1, 0), options(false), store);
  const acc::detail::Collective collective("all_reduce", at::zeros({2}), acc::ReduceOp::sum);
  for (uint64_t i = 1; i <= 1000; ++i) CHECK(ledger.begin(collective) == i);
  CHECK(ledger.started() == 1000);
  CHECK(store->calls == 0);
}

TEST_CASE("debug mode compares through the store and keeps one key per rank") {
  const auto store = c10::make_intrusive<CountingStore>();
  acc::detail::CollectiveLedger ledger(acc::RankGroup::world(1, 0), options(true), store);
  const acc::detail::Collective collective("all_reduce", at::zeros({2}), acc::ReduceOp::sum);
  for (int i = 0; i < 50; ++i) ledger.begin(collective);
  CHECK(store->calls >= 3 * 50);    // set, wait, get per collective
  CHECK(store->getNumKeys() == 1);  // the previous number's key is deleted
}

TEST_CASE("debug mode: ranks that call different collectives or shapes fail alike, naming both") {
  const auto store = c10::make_intrusive<c10d::HashStore>();
  const auto errors = on_two_ranks(store, 30s, [](acc::detail::CollectiveLedger& ledger, int rank) {
    ledger.begin(acc::detail::Collective("all_reduce", at::zeros({4}), acc::ReduceOp::sum));  // #1 agrees
    ledger.begin(rank == 0 ? acc::detail::Collective("all_reduce", at::zeros({4}), acc::ReduceOp::sum)
                           : acc::detail::Collective("broadcast", at::zeros({4}), std::nullopt, 0));
  });
  for (int r = 0; r < 2; ++r) {
    const auto& e = errors[static_cast<std::size_t>(r)];
    CAPTURE(e);
    CHECK(contains(e, "debug mode: rank " + std::to_string(r) + " of 2: collective #2 is not the same on every rank"));
    CHECK(contains(e, "\n  rank 0: all_reduce(sum) Float[4]\n  rank 1: broadcast(root 0) Float[4]\n"));
  }
  const auto shapes =
      on_two_ranks(c10::make_intrusive<c10d::HashStore>(), 30s, [](acc::detail::CollectiveLedger& ledger, int rank) {
        ledger.begin(acc::detail::Collective("all_gather", at::zeros({rank + 2}, at::kLong)));
      });
  for (const auto& e : shapes) CHECK(contains(e, "rank 0: all_gather() Long[2]\n  rank 1: all_gather() Long[3]"));
}

TEST_CASE("debug mode: a rank that never gets to a collective is named, within the timeout") {
  const auto started = std::chrono::steady_clock::now();
  const auto errors =
      on_two_ranks(c10::make_intrusive<c10d::HashStore>(), 1s, [](acc::detail::CollectiveLedger& ledger, int rank) {
        if (rank == 0) ledger.begin(acc::detail::Collective("barrier"));
      });
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  CHECK(errors[0] ==
        "debug mode: rank 0 of 2 is at collective #1 barrier() but rank(s) 1 did not get there within 1 s; they "
        "died, hang, or called fewer collectives: check their logs");
  CHECK(errors[1].empty());
}

TEST_CASE("a collective that timed out or failed names rank, collective, number, tensor and the fix") {
  acc::detail::CollectiveLedger ledger(acc::RankGroup::world(8, 3), options(false, 5s),
                                       c10::make_intrusive<c10d::HashStore>());
  const acc::detail::Collective collective("reduce_scatter", at::zeros({8, 2}, at::kHalf), acc::ReduceOp::mean);
  const auto timed_out = ledger.failure(17, collective, 5s, "");
  CHECK(
      contains(timed_out, "rank 3 of 8: collective #17 reduce_scatter(mean) Half[8, 2] did not complete within 5 s."));
  CHECK(contains(timed_out, "ACC_COLLECTIVE_TIMEOUT=<seconds>, acc.collective_timeout in the config file"));
  CHECK(contains(timed_out, "check the other ranks' logs"));
  const auto failed = ledger.failure(4, collective, 1500ms, "Connection closed by peer");
  CHECK(contains(failed,
                 "rank 3 of 8: collective #4 reduce_scatter(mean) Half[8, 2] failed after 1.5 s "
                 "(Connection closed by peer). Check the other ranks' logs"));
  CHECK_FALSE(contains(failed, "raise the timeout"));
}

TEST_CASE("a sub-group's ledger compares only its members and names their global ranks") {
  const auto store = c10::make_intrusive<c10d::HashStore>();
  std::array<std::string, 2> errors;
  const auto member = [&](int global_rank) {  // ranks 2 and 3 of a job of 4; 0 and 1 stay out
    acc::detail::CollectiveLedger ledger(acc::RankGroup({2, 3}, global_rank, 4), options(true, 1s), store);
    try {
      if (global_rank == 2) ledger.begin(acc::detail::Collective("barrier"));
    } catch (const acc::Error& e) {
      errors[static_cast<std::size_t>(global_rank - 2)] = e.what();
    }
  };
  std::thread other(member, 3);
  member(2);
  other.join();
  CHECK(errors[0] ==
        "debug mode: rank 2 of 4 (rank 0 of the group [2, 3]) is at collective #1 barrier() but rank(s) 3 did not "
        "get there within 1 s; they died, hang, or called fewer collectives: check their logs");
  CHECK(errors[1].empty());
  acc::detail::CollectiveLedger ledger(acc::RankGroup({2, 3}, 3, 4), options(false, 5s), store);
  CHECK(contains(ledger.failure(7, acc::detail::Collective("barrier"), 5s, ""),
                 "rank 3 of 4 (rank 1 of the group [2, 3]): collective #7 barrier() did not complete within 5 s."));
}

TEST_CASE("process group options are plain values; the config layer fills them from its keys and the environment") {
  // The environment is read in one place (config/): it no longer changes the defaults.
  setenv("ACC_COLLECTIVE_TIMEOUT", "7", 1);
  setenv("ACCELERATE_DEBUG_MODE", "yes", 1);
  CHECK(acc::ProcessGroupOptions().timeout() == 1800s);
  CHECK_FALSE(acc::ProcessGroupOptions().debug());
  const auto from_environment =
      acc::accelerator_options(acc::Config{}.with_environment([](std::string_view name) -> std::optional<std::string> {
        if (const char* value = std::getenv(std::string(name).c_str())) return std::string(value);
        return std::nullopt;
      }));
  CHECK(from_environment.process_group().timeout() == 7s);
  CHECK(from_environment.process_group().debug());
  unsetenv("ACC_COLLECTIVE_TIMEOUT");
  unsetenv("ACCELERATE_DEBUG_MODE");

  const auto configured =
      acc::accelerator_options(acc::Config::from_yaml("debug: true\nacc: {collective_timeout: 9}\n"));
  CHECK(configured.process_group().timeout() == 9s);
  CHECK(configured.process_group().debug());
  CHECK(acc::accelerator_options(acc::Config{}).process_group().timeout() == 1800s);
}
