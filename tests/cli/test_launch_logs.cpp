// acc launch --log_dir: each local rank's stdout and stderr copied to DIR/rank_<RANK>.stdout and
// .stderr, with and without --tee, and across --max_restarts restarts.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// What the probe's print-lines writes, byte for byte.
const std::string kProbeStdout = "out line 1\nout line 2\nno newline at end";
const std::string kProbeStderr = "err line 1\n";

std::vector<std::string> lines_with_prefix(const std::string& text, const std::string& prefix) {
  std::vector<std::string> found;
  for (const std::string& line : lines_of(text))
    if (line.rfind(prefix, 0) == 0) found.push_back(line.substr(prefix.size()));
  return found;
}

}  // namespace

TEST_CASE("--log_dir without --tee: each rank's files hold exactly its output, and the terminal still gets it") {
  const TempFolder folder("acc_launch_logs");
  const fs::path logs = folder.path() / "new" / "logs";  // created, parents too
  const LauncherResult result =
      run_acc({"launch", "--cpu", "--num_processes", "2", "--log_dir", logs.string(), kProbe, "print-lines"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  for (int rank : {0, 1}) {
    CAPTURE(rank);
    CHECK(read_file(logs / ("rank_" + std::to_string(rank) + ".stdout")) == kProbeStdout);
    CHECK(read_file(logs / ("rank_" + std::to_string(rank) + ".stderr")) == kProbeStderr);
  }
  CHECK(fs::exists(logs / "rank_2.stdout") == false);
  // No prefix without --tee: every line twice, once per rank.
  std::vector<std::string> out = lines_of(result.out), err = lines_of(result.err);
  std::sort(out.begin(), out.end());
  CHECK(out == std::vector<std::string>{"no newline at end", "no newline at end", "out line 1", "out line 1",
                                        "out line 2", "out line 2"});
  CHECK(err == std::vector<std::string>{"err line 1", "err line 1"});
}

TEST_CASE("--log_dir with --tee: the files are unprefixed, the terminal's lines prefixed, of each rank") {
  const TempFolder folder("acc_launch_logs_tee");
  // A file of an earlier run is replaced.
  std::ofstream(folder.path() / "rank_1.stdout") << "an earlier run's output\n";
  const LauncherResult result = run_acc({"launch", "--tee", "--cpu", "--num_processes", "2",
                                         "--log_dir=" + folder.path().string(), kProbe, "print-lines"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  for (int rank : {0, 1}) {
    CAPTURE(rank);
    const std::string prefix = "[rank " + std::to_string(rank) + "] ";
    CHECK(read_file(folder.path() / ("rank_" + std::to_string(rank) + ".stdout")) == kProbeStdout);
    CHECK(read_file(folder.path() / ("rank_" + std::to_string(rank) + ".stderr")) == kProbeStderr);
    CHECK(lines_with_prefix(result.out, prefix) ==
          std::vector<std::string>{"out line 1", "out line 2", "no newline at end"});
    CHECK(lines_with_prefix(result.err, prefix) == std::vector<std::string>{"err line 1"});
  }
  CHECK(lines_of(result.out).size() == 6);
  CHECK(lines_of(result.err).size() == 2);
}

TEST_CASE("--log_dir on machine rank 1 names the files by global rank") {
  const TempFolder folder("acc_launch_logs_machine");
  const LauncherResult result =
      run_acc({"launch", "--num_processes", "4", "--num_machines", "2", "--machine_rank", "1", "--main_process_ip",
               "10.0.0.1", "--log_dir", folder.path().string(), kProbe, "env"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  for (int rank : {2, 3}) {
    CAPTURE(rank);
    const std::string text = read_file(folder.path() / ("rank_" + std::to_string(rank) + ".stdout"));
    CHECK(text.rfind("env RANK=" + std::to_string(rank) + " ", 0) == 0);
    CHECK(read_file(folder.path() / ("rank_" + std::to_string(rank) + ".stderr")) == "");
  }
  CHECK_FALSE(fs::exists(folder.path() / "rank_0.stdout"));
}

TEST_CASE("--log_dir with --max_restarts: each restart appends a line saying which one begins") {
  const TempFolder folder("acc_launch_logs_restarts");
  std::ofstream(folder.path() / "rank_0.stdout") << "an earlier run's output\n";
  // The first start fails; the restart succeeds.
  const LauncherResult result =
      run_acc({"launch", "--max_restarts", "2", "--restart_delay", "0", "--log_dir", folder.path().string(), "sh", "-c",
               "echo attempt $TORCHELASTIC_RESTART_COUNT; echo oops >&2; test $TORCHELASTIC_RESTART_COUNT = 1"});
  REQUIRE(result.finished_in_time);
  CAPTURE(result.err);
  CHECK(result.exit_code == 0);
  CHECK(read_file(folder.path() / "rank_0.stdout") == "attempt 0\nacc launch: restart 1 of 2 begins\nattempt 1\n");
  CHECK(read_file(folder.path() / "rank_0.stderr") == "oops\nacc launch: restart 1 of 2 begins\noops\n");
  CHECK(lines_of(result.out) == std::vector<std::string>{"attempt 0", "attempt 1"});
}
