// Collectives that go wrong: a rank that skips one (the others fail within the timeout, naming
// the collective), and debug mode's comparison of collectives across ranks. Each case makes an
// accelerator of its own with a short timeout; the shared one keeps the ranks in step between
// cases. Run on their own: `acc_dist_worker --no-skip -ts=collective_faults` (Gloo, or NCCL with
// ACC_TEST_BACKEND=nccl).
#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <chrono>
#include <string>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Calls fn(shared, faulty): the test's accelerator, and one with these process group options on
// the same backend.
template <class Fn>
void with_faulty_accelerator(const acc::ProcessGroupOptions& options, Fn&& fn) {
  with_accelerator([&](auto& shared) {
    using Strategy = typename std::decay_t<decltype(shared)>::strategy_type;
    acc::Accelerator<Strategy, acc::FP32, acc::Sequential> faulty(acc::AcceleratorOptions().process_group(options));
    fn(shared, faulty);
  });
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const acc::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_SUITE("collective_faults" * doctest::skip()) {
  TEST_CASE("a rank that skips a collective: the others fail within the timeout, naming it") {
    with_faulty_accelerator(acc::ProcessGroupOptions().timeout(3s), [](auto& shared, auto& faulty) {
      const int rank = faulty.process_index(), world = faulty.num_processes();
      auto& comm = faulty.strategy().comm();
      faulty.wait_for_everyone();
      if (rank != 1) {
        const auto number = std::to_string(comm.sequence() + 1);
        const auto started = Clock::now();
        // Under NCCL the all-reduce only queues: the barrier's wait meets the watchdog's abort.
        const auto error = error_of([&] {
          faulty.reduce(at::ones({4, 3}, at::TensorOptions(faulty.device())));
          faulty.wait_for_everyone();
        });
        const auto waited = Clock::now() - started;
        CAPTURE(error);
        CHECK(error.find("rank " + std::to_string(rank) + " of " + std::to_string(world) + ": collective #" + number +
                         " all_reduce(sum) Float[4, 3] did not complete within 3 s") != std::string::npos);
        CHECK(error.find("raise the timeout: ACC_COLLECTIVE_TIMEOUT=<seconds>") != std::string::npos);
        CHECK(waited >= 3s);
        CHECK(waited < 20s);
      }
      shared.wait_for_everyone();  // rank 1 waits here while the others time out
    });
  }

  TEST_CASE("debug mode: ranks calling different collectives fail alike on every rank, naming each one's") {
    with_faulty_accelerator(acc::ProcessGroupOptions().debug(true).timeout(30s), [](auto& shared, auto& faulty) {
      const int rank = faulty.process_index();
      const auto device = faulty.device();
      const auto started = Clock::now();
      const auto error = error_of([&] {
        if (rank == 1)
          faulty.broadcast(at::ones({2}, at::TensorOptions(device)));
        else
          faulty.reduce(at::ones({4, 3}, at::TensorOptions(device)));
      });
      CAPTURE(error);
      CHECK(error.find("debug mode: rank " + std::to_string(rank) + " of ") == 0);
      CHECK(error.find("is not the same on every rank:\n  rank 0: all_reduce(sum) Float[4, 3]\n  rank 1: "
                       "broadcast(root 0) Long[10]\n") != std::string::npos);  // broadcast sends its shape first
      CHECK(Clock::now() - started < 20s);
      // Found before either collective started: the communicator is still usable.
      const auto total = faulty.reduce(at::full({1}, rank + 1.0, at::TensorOptions(device)));
      const int world = faulty.num_processes();
      CHECK(total.cpu().template item<double>() == world * (world + 1) / 2.0);
      shared.wait_for_everyone();
    });
  }

  TEST_CASE("debug mode: tensors of different shapes are reported, not reduced") {
    with_faulty_accelerator(acc::ProcessGroupOptions().debug(true).timeout(30s), [](auto& shared, auto& faulty) {
      const int rank = faulty.process_index();
      auto tensor = at::ones({rank + 2}, at::TensorOptions(faulty.device()));
      const auto error = error_of([&] { faulty.strategy().comm().all_reduce(tensor, acc::ReduceOp::sum); });
      CAPTURE(error);
      CHECK(error.find("\n  rank 0: all_reduce(sum) Float[2]\n  rank 1: all_reduce(sum) Float[3]\n") !=
            std::string::npos);
      CHECK(int_values(tensor) == std::vector<int64_t>(static_cast<std::size_t>(rank + 2), 1));
      shared.wait_for_everyone();
    });
  }

  TEST_CASE("debug mode agrees with matching collectives, gradient all-reduces included") {
    with_faulty_accelerator(acc::ProcessGroupOptions().debug(true).timeout(30s), [](auto&, auto& faulty) {
      torch::nn::Linear model(3, 2);
      torch::optim::SGD sgd(model->parameters(), 0.1);
      auto [prepared, optimizer] = faulty.prepare(model, sgd);
      const auto before = faulty.strategy().comm().sequence();
      for (int step = 0; step < 3; ++step) {
        optimizer.zero_grad();
        faulty.backward(prepared(at::ones({4, 3}, at::TensorOptions(faulty.device()))).sum());
        optimizer.step();
      }
      CHECK(faulty.strategy().comm().sequence() - before >= 3);  // one bucket or more per step
      faulty.wait_for_everyone();
    });
  }
}
