// `acc estimate-memory` end to end: the numbers of its table for small counts (exact bytes) and for
// model sizes people ask about, and the errors for bad input.
#include "launcher_process.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
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

namespace fs = std::filesystem;

// A safetensors file whose header is `header` (JSON), followed by `data_bytes` zero bytes.
void write_safetensors(const fs::path& file, const std::string& header, std::size_t data_bytes) {
  std::ofstream out(file, std::ios::binary);
  for (int byte = 0; byte < 8; ++byte) out.put(static_cast<char>((std::uint64_t{header.size()} >> (8 * byte)) & 0xff));
  out << header << std::string(data_bytes, '\0');
}

// A model saved as two shards (7 and 10 parameters) with their index, as save_model and Hugging
// Face write sharded checkpoints, and a single-file model of 17 parameters beside it.
struct SavedModels {
  TempFolder temp{"acc_estimate_memory"};
  fs::path folder = temp.path();
  SavedModels() {
    fs::create_directories(folder / "sharded");
    write_safetensors(
        folder / "sharded" / "model-00001-of-00002.safetensors",
        R"({"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
        R"("a.bias":{"dtype":"F32","shape":[1],"data_offsets":[24,28]}})",
        28);
    write_safetensors(folder / "sharded" / "model-00002-of-00002.safetensors",
                      R"({"b.weight":{"dtype":"BF16","shape":[5,2],"data_offsets":[0,20]}})", 20);
    std::ofstream(folder / "sharded" / "model.safetensors.index.json")
        << R"({"metadata":{"total_size":48},"weight_map":{"a.weight":"model-00001-of-00002.safetensors",)"
        << R"("a.bias":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}})";
    fs::create_directories(folder / "single");
    write_safetensors(folder / "single" / "model.safetensors",
                      R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},)"
                      R"("s":{"dtype":"F32","shape":[],"data_offsets":[64,68]}})",
                      68);
  }
};

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
        "acc estimate-memory: give a model (a safetensors file, index or folder) or --num_parameters, the model's "
        "parameter count, such as 7B or 125000000\n");
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
  CHECK(error_of({"model.safetensors", "gpt2"}).find("unexpected argument 'gpt2': give one model") !=
        std::string::npos);
  CHECK(error_of({"model.safetensors", "--num_parameters", "7B"}).find("either a model or --num_parameters") !=
        std::string::npos);
}

TEST_CASE("estimate-memory --help documents the formulas") {
  const LauncherResult result = run_acc({"estimate-memory", "--help"}, {}, 10s);
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("FSDP FULL_SHARD     4S                              4S          8S") != std::string::npos);
  CHECK(result.out.find("S = ceil(N / W)") != std::string::npos);
}

TEST_CASE("estimate-memory MODEL counts the parameters in a safetensors file, a sharded model's index or its folder") {
  const SavedModels models;
  const auto counted_as = [](const std::string& count) { return estimate({"--num_parameters", count}); };
  // A scalar is one parameter: 4 x 4 + 1.
  CHECK(estimate({(models.folder / "single" / "model.safetensors").string()}) == counted_as("17"));
  CHECK(estimate({(models.folder / "single").string()}) == counted_as("17"));
  // Both shards of the index, the bf16 one included: 2 x 3 + 1 + 5 x 2.
  const std::string index = (models.folder / "sharded" / "model.safetensors.index.json").string();
  CHECK(estimate({index, "--num_processes", "3"}) == estimate({"--num_parameters", "17", "--num_processes", "3"}));
  CHECK(estimate({(models.folder / "sharded").string()}) == counted_as("17"));
  const LauncherResult result = run_acc({"estimate-memory", index, "--num_processes", "1"}, {}, 10s);
  CHECK(result.out.rfind("Memory per process to train 17 parameters (" + index + ", 2 safetensors files) in float32",
                         0) == 0);
}

TEST_CASE("estimate-memory MODEL: a missing or malformed file is an error naming it") {
  const SavedModels models;
  const auto error_of = [](const fs::path& model) {
    const LauncherResult result = run_acc({"estimate-memory", model.string()}, {}, 10s);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == 1);
    CHECK(result.out.empty());
    return result.err;
  };
  const fs::path missing = models.folder / "missing.safetensors";
  CHECK(error_of(missing) == "acc estimate-memory: " + missing.string() +
                                 " does not exist; give a .safetensors file, an index or a folder holding them\n");
  CHECK(error_of(models.folder)
            .find(models.folder.string() + " holds neither model.safetensors nor model.safetensors.index.json") !=
        std::string::npos);
  const fs::path text = models.folder / "notes.safetensors";
  std::ofstream(text) << "not a model at all";
  CHECK(error_of(text).find(text.string() + " is not a safetensors file: its header length") != std::string::npos);
  const fs::path short_file = models.folder / "short.safetensors";
  std::ofstream(short_file) << "abc";
  CHECK(error_of(short_file).find("shorter than the 8-byte header length") != std::string::npos);
  const fs::path no_shape = models.folder / "no_shape.safetensors";
  write_safetensors(no_shape, R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4);
  CHECK(error_of(no_shape).find("tensor 'w' has no shape in the header") != std::string::npos);
  const fs::path empty = models.folder / "empty.safetensors";
  write_safetensors(empty, R"({"__metadata__":{}})", 0);
  CHECK(error_of(empty).find("holds 0 parameters") != std::string::npos);

  const fs::path index = models.folder / "sharded" / "model.safetensors.index.json";
  fs::remove(models.folder / "sharded" / "model-00002-of-00002.safetensors");
  CHECK(error_of(index).find("model-00002-of-00002.safetensors cannot be opened") != std::string::npos);
  CHECK(error_of(index).find("(a shard named by " + index.string() + ")") != std::string::npos);
  std::ofstream(index) << R"({"metadata":{}})";
  CHECK(error_of(index).find("has no \"weight_map\" object naming the shard files") != std::string::npos);
}

namespace {

// A model as save_model writes it: embed (10 x 4), three layers of a 10 x 4 weight and a bias of 4,
// head (10 x 4), in float32, in that order in the file (their data offsets), which the names'
// order in the header (alphabetical) is not. Bytes: embed and head 160 each, each layer 176.
struct LayeredModel {
  TempFolder temp{"acc_device_map"};
  fs::path file = temp.path() / "model.safetensors";
  LayeredModel() {
    std::string header = "{", separator;
    uint64_t offset = 0;
    const auto add = [&](const std::string& name, const std::string& shape, uint64_t bytes) {
      header += separator + "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[" +
                std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
      separator = ",";
      offset += bytes;
    };
    add("embed.weight", "[10,4]", 160);
    for (const std::string layer : {"0", "1", "2"}) {
      add("layers." + layer + ".w", "[10,4]", 160);
      add("layers." + layer + ".b", "[4]", 16);
    }
    add("head.weight", "[10,4]", 160);
    write_safetensors(file, header + "}", offset);
  }
};

// What estimate-memory prints after its table: the device map's lines.
std::vector<std::string> map_lines(const std::vector<std::string>& arguments) {
  const LauncherResult result = run_acc(arguments, {}, 30s);
  REQUIRE(result.finished_in_time);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  const auto lines = lines_of(result.out);
  const auto blank = std::find(lines.begin(), lines.end(), "");
  REQUIRE(blank != lines.end());
  const auto after_table = std::find(std::next(blank), lines.end(), "");
  REQUIRE(after_table != lines.end());
  return {std::next(after_table), lines.end()};
}

}  // namespace

TEST_CASE("estimate-memory MODEL --device_map: the map load_checkpoint_and_dispatch would make, every module a unit") {
  const LayeredModel model;
  const std::string path = model.file.string();
  // GPU 0 holds 600 bytes, less what is kept for the largest unit never split (a layer, 176; the
  // CPU keeps as much for the weights it offloads): embed (160) and layers.0 (176) fit, the rest
  // goes to the CPU. layers.* keeps each layer whole; "layers" itself is split.
  CHECK(map_lines({"estimate-memory", path, "--max_memory", "0=600,cpu=2000", "--no_split", "layers.*"}) ==
        std::vector<std::string>{
            "Device map for inference: device_map=\"auto\" within 0 600 bytes, cpu 1.953 KiB, no_split layers.*",
            "{'': 0, 'embed': 0, 'layers': 0, 'layers.0': 0, 'layers.1': 'cpu', 'layers.2': 'cpu', 'head': 'cpu'}",
            "  0: 336 bytes", "  cpu: 512 bytes"});
  // sequential fills GPU 1 before the CPU; GPU 1, not where the model runs, keeps no room.
  CHECK(map_lines({"estimate-memory", path, "--device_map", "sequential", "--max_memory", "0=600,1=600,cpu=2000",
                   "--no_split", "layers.*"}) ==
        std::vector<std::string>{
            "Device map for inference: device_map=\"sequential\" within 0 600 bytes, 1 600 bytes, cpu 1.953 KiB, "
            "no_split layers.*",
            "{'': 0, 'embed': 0, 'layers': 0, 'layers.0': 0, 'layers.1': 1, 'layers.2': 1, 'head': 1}",
            "  0: 336 bytes", "  1: 512 bytes"});
  // In bfloat16 the model is half as large (424 bytes) and fits on GPU 0 whole.
  CHECK(map_lines({"estimate-memory", path, "--dtype", "bfloat16", "--max_memory", "0=600,cpu=2000", "--no_split",
                   "layers.*"}) ==
        std::vector<std::string>{
            "Device map for inference: device_map=\"auto\" within 0 600 bytes, cpu 1.953 KiB, no_split layers.*",
            "{'': 0}", "  0: 424 bytes"});
  // Without budgets: what this machine's devices have free; the whole model fits in any.
  const auto free = map_lines({"estimate-memory", path, "--device_map", "auto"});
  REQUIRE(free.size() == 3);
  CHECK(free[0].rfind("Device map for inference: device_map=\"auto\" within what the devices have free (", 0) == 0);
  CHECK((free[1] == "{'': 0}" || free[1] == "{'': 'cpu'}"));
  CHECK(free[2].find(": 848 bytes") != std::string::npos);
}

TEST_CASE("estimate-memory --device_map: a model that does not fit and bad budgets are errors naming them") {
  const LayeredModel model;
  const std::string path = model.file.string();
  const auto error_of = [&](const std::vector<std::string>& flags, int exit_code) {
    std::vector<std::string> arguments = {"estimate-memory", path};
    arguments.insert(arguments.end(), flags.begin(), flags.end());
    const LauncherResult result = run_acc(arguments, {}, 30s);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == exit_code);
    return result.err;
  };
  CHECK(error_of({"--max_memory", "0=300,cpu=300"}, 1)
            .rfind("acc estimate-memory: the model does not fit in max_memory: it takes 848 bytes", 0) == 0);
  CHECK(error_of({"--max_memory", "0:20GiB"}, 1) ==
        "acc estimate-memory: --max_memory '0:20GiB': '0:20GiB' is not DEVICE=SIZE; give budgets such as "
        "0=20GiB,1=20GiB,cpu=64GiB,disk=1TB\n");
  CHECK(error_of({"--max_memory", "cpu=lots"}, 1).find("'lots'") != std::string::npos);
  CHECK(error_of({"--device_map", "fastest"}, 1).find("device_map 'fastest'") != std::string::npos);
  CHECK(error_of({"--no_split", "blocks.*"}, 1)
            .find("no_split names class 'blocks.*', which no module of the model is (its classes: ") !=
        std::string::npos);
  // A map needs the model's tensors, not only their count.
  const LauncherResult counted =
      run_acc({"estimate-memory", "--num_parameters", "7B", "--device_map", "auto"}, {}, 10s);
  CHECK(counted.exit_code == 2);
  CHECK(counted.err.find("--device_map, --max_memory and --no_split place a model's weights: give the model") !=
        std::string::npos);
}
