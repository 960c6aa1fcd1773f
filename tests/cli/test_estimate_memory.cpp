// `acc estimate-memory` end to end: the numbers of its table for small counts (exact bytes) and for
// model sizes people ask about, and the errors for bad input.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <map>
#include <regex>
#include <string>
#include <utility>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

// The table's cells after the strategy and process count (weights, gradients, Adam state, total),
// by (strategy, processes); columns are two or more spaces apart.
using Table = std::map<std::pair<std::string, std::string>, std::vector<std::string>>;

Table estimate(const std::vector<std::string>& flags) {
  std::vector<std::string> arguments = {"estimate-memory"};
  arguments.insert(arguments.end(), flags.begin(), flags.end());
  const LauncherResult result = run_acc(arguments, {}, 10s);
  REQUIRE(result.finished_in_time);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  Table table;
  const std::regex columns(" {2,}");
  bool in_table = false;
  for (const std::string& line : lines_of(result.out)) {
    if (line.rfind("strategy ", 0) == 0) {
      in_table = true;
      continue;
    }
    if (!in_table) continue;
    const std::vector<std::string> cells(std::sregex_token_iterator(line.begin(), line.end(), columns, -1), {});
    REQUIRE_MESSAGE(cells.size() == 6, line);
    table[{cells[0], cells[1]}] = {cells.begin() + 2, cells.end()};
  }
  return table;
}

using Row = std::vector<std::string>;

}  // namespace

TEST_CASE("estimate-memory: 4 bytes of weights, 4 of gradients and 8 of Adam state per parameter, sharded by FSDP") {
  // 10 parameters on 3 processes: a shard holds ceil(10 / 3) = 4.
  const Table fp32 = estimate({"--num_parameters", "10", "--num_processes", "1,3"});
  CHECK(fp32.size() == 8);
  CHECK(fp32.at({"Single", "1"}) == Row{"40 B", "40 B", "80 B", "160 B"});
  CHECK(fp32.at({"DDP", "3"}) == Row{"40 B", "40 B", "80 B", "160 B"});
  CHECK(fp32.at({"FSDP NO_SHARD", "3"}) == Row{"40 B", "40 B", "80 B", "160 B"});
  // The shard's fp32 weights plus the whole model gathered from forward to backward.
  CHECK(fp32.at({"FSDP SHARD_GRAD_OP", "3"}) == Row{"56 B", "16 B", "32 B", "104 B"});
  CHECK(fp32.at({"FSDP FULL_SHARD", "3"}) == Row{"16 B", "16 B", "32 B", "64 B"});
  CHECK(fp32.at({"FSDP FULL_SHARD", "1"}) == Row{"40 B", "40 B", "80 B", "160 B"});

  // Mixed precision: the 2-byte compute copy (Accelerate's estimator counts it too); SHARD_GRAD_OP
  // gathers in that dtype.
  const Table bf16 = estimate({"--num_parameters", "10", "--dtype", "bfloat16", "--num_processes", "3"});
  CHECK(bf16.size() == 4);
  CHECK(bf16.at({"DDP", "3"}) == Row{"60 B", "40 B", "80 B", "180 B"});
  CHECK(bf16.at({"FSDP NO_SHARD", "3"}) == Row{"60 B", "40 B", "80 B", "180 B"});
  CHECK(bf16.at({"FSDP SHARD_GRAD_OP", "3"}) == Row{"36 B", "16 B", "32 B", "84 B"});
  CHECK(bf16.at({"FSDP FULL_SHARD", "3"}) == Row{"16 B", "16 B", "32 B", "64 B"});
  CHECK(estimate({"--num_parameters", "10", "--dtype", "float16", "--num_processes", "3"}) == bf16);
}

TEST_CASE("estimate-memory: model sizes with K/M/B suffixes, in binary units, for the default process counts") {
  // 7e9 parameters: 16 bytes each = 104.31 GiB; FULL_SHARD on 8 processes 14e9 bytes = 13.04 GiB.
  const Table seven_billion = estimate({"--num_parameters", "7B"});
  CHECK(seven_billion.size() == 16);  // 4 strategies x 1, 2, 4, 8 processes
  CHECK(seven_billion.at({"Single", "1"}) == Row{"26.08 GiB", "26.08 GiB", "52.15 GiB", "104.31 GiB"});
  CHECK(seven_billion.at({"FSDP FULL_SHARD", "8"}) == Row{"3.26 GiB", "3.26 GiB", "6.52 GiB", "13.04 GiB"});
  CHECK(seven_billion.at({"FSDP FULL_SHARD", "2"}).back() == "52.15 GiB");
  // 18 bytes per parameter in mixed precision: 126e9 bytes.
  CHECK(estimate({"--num_parameters", "7000000000", "--dtype", "bfloat16", "--num_processes", "1"})
            .at({"Single", "1"})
            .back() == "117.35 GiB");
  // 1.3e9 parameters: 5.2e9 bytes of weights; 125e6: 1.86 GiB in all.
  CHECK(estimate({"--num_parameters=1.3B", "--num_processes=1"}).at({"Single", "1"}).front() == "4.84 GiB");
  CHECK(estimate({"--num_parameters", "125M", "--num_processes", "1"}).at({"Single", "1"}).back() == "1.86 GiB");
  CHECK(estimate({"--num_parameters", "300k", "--num_processes", "1"}).at({"Single", "1"}).back() == "4.58 MiB");
}

TEST_CASE("estimate-memory: bad input is a usage error naming the flag and what it accepts") {
  const auto error_of = [](const std::vector<std::string>& flags) {
    std::vector<std::string> arguments = {"estimate-memory"};
    arguments.insert(arguments.end(), flags.begin(), flags.end());
    const LauncherResult result = run_acc(arguments, {}, 10s);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == 2);
    CHECK(result.out.empty());
    return result.err;
  };
  CHECK(error_of({}) ==
        "acc estimate-memory: --num_parameters is required: the model's parameter count, such as 7B or "
        "125000000\n");
  for (const std::string bad : {"7X", "0", "1.5", "-3", "1e9", "B", "2000T", ".5B"}) {
    CAPTURE(bad);
    CHECK(error_of({"--num_parameters", bad})
              .find("--num_parameters '" + bad +
                    "' is not a parameter count from 1 to 10^15; give an integer such as "
                    "7000000000, or a number with K, M, B or T such as 125M or 1.3B") != std::string::npos);
  }
  CHECK(error_of({"--num_parameters", "7B", "--dtype", "int8"}) ==
        "acc estimate-memory: --dtype 'int8' is not one of float32, bfloat16, float16\n");
  for (const std::string bad : {"0", "2,,4", "4,", "two", "1,-2", "99999999"}) {
    CAPTURE(bad);
    CHECK(error_of({"--num_parameters", "7B", "--num_processes", bad})
              .find("--num_processes '" + bad + "' is not a list of process counts") != std::string::npos);
  }
  CHECK(error_of({"--num_parameters", "7B", "--model", "gpt2"}).find("unknown flag --model") != std::string::npos);
  CHECK(error_of({"gpt2"}).find("unexpected argument 'gpt2'") != std::string::npos);
}

TEST_CASE("estimate-memory --help documents the formulas") {
  const LauncherResult result = run_acc({"estimate-memory", "--help"}, {}, 10s);
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("FSDP FULL_SHARD     4S                              4S          8S") != std::string::npos);
  CHECK(result.out.find("S = ceil(N / W)") != std::string::npos);
}
