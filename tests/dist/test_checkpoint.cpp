#include "../pch.hpp"  // first: libtorch, then doctest
#include "../resume_training.hpp"
#include "../scaled_fp32.hpp"
#include "../temp_dir.hpp"
#include "worker.hpp"

#include <torch/serialize.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#if ACC_HAS_GLOO
namespace {

namespace fs = std::filesystem;

// The phases share a directory and a recipe, from the environment:
//   plain: fp32, one step per batch;
//   full:  loss scaling with an overflow at batch 4, gradient accumulation over 3 batches (the
//          save falls mid-cycle), StepLR every 2 steps;
//   fsdp:  plain, with FSDP FULL_SHARD (each rank saves its shards' optimizer state, which one
//          process resumes dealt out again).
fs::path checkpoint_dir() {
  const char* dir = std::getenv("ACC_TEST_CHECKPOINT_DIR");
  REQUIRE_MESSAGE(dir, "set ACC_TEST_CHECKPOINT_DIR");
  return dir;
}
bool full_recipe() {
  const char* recipe = std::getenv("ACC_TEST_CHECKPOINT_RECIPE");
  return recipe && std::string(recipe) == "full";
}

acc::AcceleratorOptions options() {
  auto o = acc::AcceleratorOptions();
  if (full_recipe()) o.gradient_accumulation_steps(3).grad_scaler(acc::GradScalerOptions().growth_interval(3));
  return o;
}
resume::Recipe recipe() {
  resume::Recipe r;
  if (full_recipe()) {
    r.scheduler_step_size = 2;
    r.overflow_at = 4;
  }
  return r;
}

// Runs the phase with the recipe's precision.
template <class Fn>
resume::Run with_recipe(Fn&& fn) {
  return full_recipe() ? fn(ScaledFP32{}) : fn(acc::FP32{});
}

bool fsdp_recipe() {
  const char* recipe = std::getenv("ACC_TEST_CHECKPOINT_RECIPE");
  return recipe && std::string(recipe) == "fsdp";
}

template <class Precision, class... Args>
resume::Run train(Precision, Args&&... args) {
  if (fsdp_recipe())
    return resume::train<acc::FSDP<acc::Gloo, acc::FullShard>, Precision, acc::Shuffled>(options(), recipe(),
                                                                                         std::forward<Args>(args)...);
  return resume::train<acc::CPU, Precision, acc::Shuffled>(options(), recipe(), std::forward<Args>(args)...);
}

fs::path straight_file(int rank) { return checkpoint_dir() / ("straight_" + std::to_string(rank) + ".pt"); }

int rank_of_environment() { return acc::ProcessEnvironment::from_environment().rank; }

std::vector<at::Tensor> as_tensors(const resume::Run& run) {
  std::vector<at::Tensor> tensors{at::tensor(run.losses), at::tensor(run.scales, at::kDouble),
                                  at::tensor(run.lrs, at::kDouble)};
  tensors.insert(tensors.end(), run.parameters.begin(), run.parameters.end());
  return tensors;
}

}  // namespace

// Run phase by phase by tests/dist/CMakeLists.txt, each phase a new `acc launch` process group:
// ACC_TEST_CHECKPOINT_DIR=D ACC_TEST_CHECKPOINT_RECIPE=plain|full acc_dist_worker --no-skip -tc=checkpoint_<phase>
TEST_SUITE("checkpoint" * doctest::skip()) {
  TEST_CASE("checkpoint_straight: 20 batches, recorded per rank") {
    const auto run = with_recipe([](auto precision) { return train(precision, 0, 20); });
    torch::save(as_tensors(run), straight_file(rank_of_environment()).string());
  }

  TEST_CASE("checkpoint_save: 7 batches and a checkpoint; a save failing on rank 1 fails on every rank") {
    with_recipe([](auto precision) {
      return train(precision, 0, 7, fs::path(), checkpoint_dir() / "ckpt", [](auto& accelerator) {
        setenv("ACC_TEST_FAIL_SAVE_AT", "random_states@1", 1);
        std::string error;
        try {
          accelerator.save_state(checkpoint_dir() / "ckpt");
        } catch (const acc::Error& e) {
          error = e.what();
        }
        unsetenv("ACC_TEST_FAIL_SAVE_AT");
        CHECK(error.find("(on rank 1): ACC_TEST_FAIL_SAVE_AT=random_states@1") != std::string::npos);
        // Rank 1's writes fail as on a full disk (its file size limit): every rank throws, naming
        // rank 1 and the limit, and the previous checkpoint stays.
        error.clear();
        try {
          std::optional<FileSizeLimit> limit;
          if (accelerator.process_index() == 1) limit.emplace(1024);
          accelerator.save_state(checkpoint_dir() / "ckpt");
        } catch (const acc::Error& e) {
          error = e.what();
        }
        CHECK(error.find("(on rank 1): cannot write '") != std::string::npos);
        CHECK(error.find("this process may write files of at most 1024 bytes (ulimit -f)") != std::string::npos);
        accelerator.wait_for_everyone();
        for (const auto& entry : fs::directory_iterator(checkpoint_dir()))
          CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
        CHECK(fs::exists(checkpoint_dir() / "ckpt" / "acc_state.json"));
        CHECK(fs::exists(checkpoint_dir() / "ckpt" / "random_states_1.bin"));
        CHECK(fs::exists(checkpoint_dir() / "ckpt" / "optimizer_rank1.bin") == fsdp_recipe());
        CHECK(fs::exists(checkpoint_dir() / "ckpt" / "gradients_1.safetensors") == full_recipe());
      });
    });
  }

  TEST_CASE("checkpoint_resume: a new process group loads the checkpoint; 13 more batches equal the straight run") {
    const auto resumed = with_recipe([](auto precision) { return train(precision, 7, 13, checkpoint_dir() / "ckpt"); });
    std::vector<at::Tensor> straight;
    torch::load(straight, straight_file(rank_of_environment()).string());
    const auto mine = as_tensors(resumed);
    REQUIRE(straight.size() == mine.size());
    CHECK(at::equal(mine[0], straight[0].narrow(0, 7, 13)));                     // losses
    if (full_recipe()) CHECK(at::equal(mine[1], straight[1].narrow(0, 7, 13)));  // loss scales
    CHECK(at::equal(mine[2], straight[2].narrow(0, 7, 13)));                     // learning rates
    for (std::size_t i = 3; i < mine.size(); ++i) CHECK(at::equal(mine[i], straight[i]));
  }

  TEST_CASE(
      "checkpoint_other_world_size: one process resumes DDP's and FSDP's 2-rank checkpoints; a mid-cycle one not") {
    std::string error;
    with_recipe([&](auto precision) {
      try {
        train(precision, 0, 0, checkpoint_dir() / "ckpt");
      } catch (const acc::Error& e) {
        error = e.what();
      }
      return resume::Run{};
    });
    if (!full_recipe()) {  // FSDP's optimizer state is dealt out again from the ranks' files
      CHECK(error.empty());
      return;
    }
    // Saved after micro-step 7 of 3-step cycles: the gradients are each rank's own.
    CHECK(error.find((checkpoint_dir() / "ckpt" / "acc_state.json").string()) != std::string::npos);
    CHECK(error.find("saved by 2 processes, and this job has 1") != std::string::npos);
    CHECK(error.find("in the middle of a gradient accumulation cycle") != std::string::npos);
  }
}
#endif
