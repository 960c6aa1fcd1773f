// `acc test`: the sanity check program (acc_sanity_check) run under acc launch with a config, on 1
// and 2 CPU processes; a missing or failing check program.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

// `acc test --config_file` with `yaml`, in a folder whose HF_HOME holds no default config.
LauncherResult acc_test_with(const TempFolder& folder, const std::string& yaml) {
  const fs::path file = folder.path() / "config.yaml";
  std::ofstream(file) << yaml;
  // Within the ctest TIMEOUT (30 s), so that a hang is reported here with the output so far.
  return run_acc({"test", "--config_file", file.string()}, {"HF_HOME=" + (folder.path() / "hf").string()}, 25s);
}

}  // namespace

TEST_CASE("acc test passes on one CPU process") {
  const TempFolder folder("acc_test_one");
  const LauncherResult result = acc_test_with(folder, "distributed_type: NO\nuse_cpu: true\nnum_processes: 1\n");
  REQUIRE(result.finished_in_time);
  CAPTURE(result.err);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "acc test: passed on 1 process (distributed_type=NO, mixed_precision=no)\n");
}

// The GPU builds have no Gloo: scripts/gpu_multi.sh runs acc test over NCCL there.
TEST_CASE("acc test passes on 2 CPU processes (MULTI_CPU, Gloo)" * doctest::skip(!ACC_HAS_GLOO)) {
  const TempFolder folder("acc_test_two");
  const LauncherResult result = acc_test_with(
      folder,
      "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 2\nmain_process_port: 0\nmixed_precision: no\n");
  REQUIRE(result.finished_in_time);
  CAPTURE(result.err);
  CHECK(result.exit_code == 0);
  CHECK(result.out == "acc test: passed on 2 processes (distributed_type=MULTI_CPU, mixed_precision=no)\n");
}

TEST_CASE("acc test passes on 2 CPU processes in bf16" * doctest::skip(!ACC_HAS_GLOO)) {
  const TempFolder folder("acc_test_two_bf16");
  const LauncherResult bf16 = acc_test_with(
      folder,
      "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 2\nmain_process_port: 0\nmixed_precision: bf16\n");
  REQUIRE(bf16.finished_in_time);
  CAPTURE(bf16.err);
  CHECK(bf16.exit_code == 0);
  CHECK(bf16.out == "acc test: passed on 2 processes (distributed_type=MULTI_CPU, mixed_precision=bf16)\n");
}

TEST_CASE("acc test without its sanity check program fails with a message naming it") {
  const TempFolder folder("acc_test_missing");
  const fs::path copy = folder.path() / "acc";
  fs::copy_file(ACC_BIN, copy);
  const LauncherResult result = run_program(copy.string(), {"test"}, {}, 10s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 127);
  CHECK(result.out == "");
  CHECK(result.err == "acc test: the sanity check program " + (folder.path() / "acc_sanity_check").string() +
                          " is missing or not executable (No such file or directory); it is built and installed "
                          "next to acc: build the target acc_sanity_check (or reinstall accelerate-cpp)\n");
}

TEST_CASE("acc test exits with the sanity check's failing code and says it failed") {
  const TempFolder folder("acc_test_failing");
  const fs::path copy = folder.path() / "acc";
  fs::copy_file(ACC_BIN, copy);
  const fs::path check = folder.path() / "acc_sanity_check";
  std::ofstream(check) << "#!/bin/sh\necho \"acc test: FAILED on rank $RANK: made up\" >&2\nexit 3\n";
  fs::permissions(check, fs::perms::owner_all);
  const LauncherResult result = run_program(copy.string(), {"test"}, {"HF_HOME=" + folder.path().string()}, 10s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 3);
  CHECK(result.err.rfind("acc test: FAILED on rank 0: made up\nacc launch: rank 0 (pid ", 0) == 0);
  CHECK(result.err.find(") exited with code 3\nacc test: failed (exit code 3)\n") != std::string::npos);
}

TEST_CASE("acc test refuses unknown arguments and a config it cannot read") {
  const LauncherResult unknown = run_acc({"test", "--num_processes", "2"});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.rfind("acc test: ", 0) == 0);

  const LauncherResult missing = run_acc({"test", "--config_file", "/nonexistent/acc_test.yaml"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.rfind("acc launch: cannot read the config file /nonexistent/acc_test.yaml", 0) == 0);
  CHECK(missing.err.find("acc test: failed (exit code 2)\n") != std::string::npos);

  const LauncherResult help = run_acc({"test", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.rfind("usage: acc test [--config_file PATH]\n", 0) == 0);
}
