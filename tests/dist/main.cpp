// The program each rank of a multi-process test runs (started by `acc launch`): the doctest cases
// of this directory, on the strategy ACC_TEST_BACKEND names (gloo: acc::CPU, nccl: DDP<Nccl>).
// `acc_dist_worker rendezvous` only joins the job, for the rendezvous tests (with
// ACC_TEST_JOIN_WHEN=FILE, ranks other than 0 wait for FILE to exist first: stalled_rendezvous.sh
// stops a rank at a known point that way);
// `acc_dist_worker interop-write|interop-read DIR` is the C++ side of the safetensors check
// against Python (interop.cpp); `acc_dist_worker elastic DIR STEPS EVERY [REFERENCE_DIR]` trains
// with checkpoints and resumes from the newest after a restart (elastic.cpp).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "worker.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "rendezvous") == 0) {
    const char* join_when = std::getenv("ACC_TEST_JOIN_WHEN");
    const char* rank = std::getenv("RANK");
    if (join_when && rank && std::strcmp(rank, "0") != 0) {
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!std::filesystem::exists(join_when) && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    try {
      with_accelerator([](auto& accelerator) { accelerator.wait_for_everyone(); });
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "elastic") == 0) return elastic_training(argc, argv);
  if (argc == 3 && (std::strcmp(argv[1], "interop-write") == 0 || std::strcmp(argv[1], "interop-read") == 0))
    return safetensors_interop(argv[1], argv[2]);
  doctest::Context context(argc, argv);
  return context.run();
}
