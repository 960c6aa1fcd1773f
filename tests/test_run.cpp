#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/run.hpp>
#include <acc/strategy/power_sgd_hook.hpp>

#include <string>

namespace {

// What acc::run handed to the function: the policies' names.
template <class Accelerator>
std::string names_of(Accelerator&) {
  using A = Accelerator;
  return std::string(A::strategy_type::name) + "/" + std::string(A::precision_type::name) + "/" +
         std::string(A::sampler_type::name);
}

acc::Config config_of(const std::string& yaml) {
  auto config = acc::Config::from_yaml(yaml, "test.yaml");
  config.use_cpu = true;  // the tests run on the CPU wherever they run
  return config;
}

}  // namespace

TEST_CASE("acc::run calls the function with the Accelerator the config selects") {
  std::string seen;
  const auto record = [&](auto& accelerator) {
    seen = names_of(accelerator);
    return 7;
  };
  CHECK(acc::run(config_of("mixed_precision: bf16\nacc: {sampler: shuffled}\n"), record) == 7);
  CHECK(seen == "NO/bf16/shuffled");
  acc::run(config_of(""), record);
  CHECK(seen == "NO/no/sequential");
  // fp16 is in the default set; on a libtorch without CPU fp16 autocast the Accelerator says so
  if (acc::compat::autocast_supported(c10::kCPU, at::kHalf)) {
    acc::run(config_of("mixed_precision: fp16\n"), record);
    CHECK(seen == "NO/fp16/sequential");
  } else {
    CHECK_THROWS_WITH_AS(acc::run(config_of("mixed_precision: fp16\n"), record),
                         doctest::Contains("--mixed_precision fp16 (mixed_precision: fp16) has no autocast on cpu in "
                                           "this libtorch; on cpu use --mixed_precision no or bf16"),
                         acc::Error);
  }
#if ACC_HAS_GLOO
  acc::run(config_of("distributed_type: MULTI_CPU\n"), record);  // one process: DDP with nobody else
  CHECK(seen == "MULTI_CPU/no/sequential");
#endif
}

TEST_CASE("acc::run passes the config's options on") {
  int64_t steps = 0;
  acc::run(config_of("gradient_accumulation_steps: 4\n"),
           [&](auto& accelerator) { steps = accelerator.options().gradient_accumulation_steps(); });
  CHECK(steps == 4);
  // The tensor-parallel size reaches both strategies that take a split model.
  const auto options = acc::accelerator_options(config_of("parallelism_config:\n  parallelism_config_tp_size: 2\n"));
  CHECK(options.ddp().tp_size() == 2);
  CHECK(options.fsdp().tp_size() == 2);
}

TEST_CASE("a combination left out of the lists is an error that lists those built") {
  const auto narrow = [](const acc::Config& config) {
    return acc::run(
        config, [](auto&) { return 0; }, acc::strategies<acc::Single>, acc::precisions<acc::FP32>,
        acc::samplers<acc::Sequential, acc::Shuffled>);
  };
  CHECK(narrow(config_of("")) == 0);
  CHECK_THROWS_WITH_AS(
      narrow(config_of("mixed_precision: fp16\n")),
      "this program has no Accelerator for distributed_type=NO mixed_precision=fp16 sampler=sequential "
      "(from test.yaml and the environment); it was built with:\n"
      "  distributed_type=NO mixed_precision=no sampler=sequential\n"
      "  distributed_type=NO mixed_precision=no sampler=shuffled\n"
      "choose one of these, or add the policies to the lists given to acc::run (ACC_STRATEGIES, "
      "ACC_PRECISIONS, ACC_SAMPLERS in CMake)",
      acc::Error);
}

#if ACC_HAS_GLOO
TEST_CASE("the config's acc.ddp_comm_hook picks the DDP whose hook has that name, with its options") {
  const auto hooked = [](const acc::Config& config) {
    return acc::run(
        config,
        [](auto& accelerator) -> int64_t {
          using Strategy = typename std::decay_t<decltype(accelerator)>::strategy_type;
          if constexpr (std::is_same_v<Strategy, acc::DDP<acc::Gloo, acc::PowerSGDHook>>)
            return accelerator.strategy().hook().options().matrix_approximation_rank();
          else
            return 0;
        },
        acc::strategies<acc::DDP<acc::Gloo>, acc::DDP<acc::Gloo, acc::PowerSGDHook>>, acc::precisions<acc::FP32>,
        acc::samplers<acc::Sequential>);
  };
  CHECK(hooked(config_of("distributed_type: MULTI_CPU\n")) == 0);
  CHECK(hooked(config_of("distributed_type: MULTI_CPU\nacc: {ddp_comm_hook: power_sgd, power_sgd_rank: 3}\n")) == 3);
  CHECK_THROWS_WITH_AS(
      hooked(config_of("distributed_type: MULTI_CPU\nacc: {ddp_comm_hook: fp16}\n")),
      doctest::Contains("distributed_type=MULTI_CPU ddp_comm_hook=fp16 mixed_precision=no sampler=sequential (from "
                        "test.yaml and the environment); it was built with:\n"
                        "  distributed_type=MULTI_CPU mixed_precision=no sampler=sequential\n"
                        "  distributed_type=MULTI_CPU ddp_comm_hook=power_sgd mixed_precision=no"),
      acc::Error);
}
#endif

#if !ACC_HAS_FP8
TEST_CASE("mixed_precision fp8 in a build without the fp8 kernels says what the build lacks") {
  CHECK_THROWS_WITH_AS(
      acc::run(acc::Config::from_yaml("mixed_precision: fp8\n", "test.yaml"), [](auto&) { return 0; }),
      "mixed_precision=fp8 (from test.yaml and the environment) cannot run: this build has no fp8: it needs a CUDA "
      "build of libtorch 2.1 or newer with accelerate-cpp's fp8 kernels (the acc::fp8 library CMake builds where it "
      "finds CUDA); use mixed_precision: bf16",
      acc::Error);
}
#endif

// Found: `acc launch --multi_gpu` on a machine without a GPU said "no Accelerator for
// distributed_type=MULTI_GPU", as if the program lacked a combination.
TEST_CASE("MULTI_GPU or FSDP where there is no CUDA device says so and how to train on the CPU") {
  if (torch::cuda::is_available()) return;  // the message is for machines without one
  for (const std::string type : {"MULTI_GPU", "FSDP"}) {
    CAPTURE(type);
    CHECK_THROWS_WITH_AS(
        acc::run(acc::Config::from_yaml("distributed_type: " + type + "\n", "test.yaml"), [](auto&) { return 0; }),
        ("distributed_type=" + type +
         " (from test.yaml and the environment) trains on CUDA devices over NCCL, but there is no "
         "CUDA device here; train on the CPU instead: acc launch --cpu (ACCELERATE_USE_CPU=true), or "
         "distributed_type: MULTI_CPU in the config")
            .c_str(),
        acc::Error);
  }
}
