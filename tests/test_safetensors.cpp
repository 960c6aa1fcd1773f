// The safetensors reader and writer: round trips, the format's layout, and hostile files.
#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/checkpoint/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Every dtype, a scalar, an empty tensor and a non-contiguous one.
std::vector<std::pair<std::string, at::Tensor>> every_dtype() {
  const auto base = at::arange(24, at::kDouble).reshape({2, 3, 4}) * 0.75 - 7;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto type :
       {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar})
    tensors.emplace_back(c10::toString(type), base.to(type));
  tensors.emplace_back("Byte", (base + 100).to(at::kByte));
  tensors.emplace_back("Bool", base.gt(0));
  tensors.emplace_back("int64_extremes", at::tensor(std::vector<int64_t>{INT64_MIN, INT64_MAX, 1LL << 40}));
  tensors.emplace_back("scalar", at::scalar_tensor(0.5));
  tensors.emplace_back("empty", at::zeros({0, 3}));
  tensors.emplace_back("transposed", at::arange(6.0f).reshape({2, 3}).t());
  return tensors;
}

std::string valid_file_bytes(const fs::path& file) {
  acc::safetensors::save_file({{"a", at::arange(4.0f)}, {"b", at::ones({2, 2}, at::kLong)}}, file);
  return read_text(file);
}

// A file of an 8-byte length and the given header, then `data` bytes of zeros.
void write_raw(const fs::path& file, const std::string& header, std::size_t data, uint64_t length = UINT64_MAX) {
  if (length == UINT64_MAX) length = header.size();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>(length >> (8 * i));
  write_text(file, bytes + header + std::string(data, '\0'));
}

std::string load_error(const fs::path& file) {
  const auto error = error_of([&] { acc::safetensors::load_file(file); });
  CHECK(contains(error, file.string()));  // every error names the file
  return error;
}

}  // namespace

TEST_SUITE("safetensors") {
  TEST_CASE("round trip of every dtype, with metadata") {
    TempDir dir;
    const auto file = dir.path / "all.safetensors";
    const auto tensors = every_dtype();
    acc::safetensors::save_file(tensors, file, {{"format", "pt"}, {"note", "ünïcode"}});
    const auto contents = acc::safetensors::load_file(file);
    CHECK(contents.metadata == acc::safetensors::Metadata{{"format", "pt"}, {"note", "ünïcode"}});
    REQUIRE(contents.tensors.size() == tensors.size());
    for (const auto& [name, tensor] : tensors) {
      CAPTURE(name);
      const auto& loaded = contents.tensors.at(name);
      CHECK((loaded.scalar_type() == tensor.scalar_type()));
      CHECK((loaded.sizes() == tensor.sizes()));
      CHECK(at::equal(loaded, tensor));
    }
  }

  TEST_CASE("the layout is the format's: little-endian length, padded JSON header, aligned contiguous data") {
    TempDir dir;
    const auto file = dir.path / "x.safetensors";
    acc::safetensors::save_file({{"small", at::ones({3}, at::kChar)}, {"big", at::ones({2}, at::kDouble)}}, file,
                                {{"format", "pt"}});
    const auto bytes = read_text(file);
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = length << 8 | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
    CHECK(length % 8 == 0);
    CHECK(bytes.size() == 8 + length + 16 + 3);
    const auto header = nlohmann::json::parse(bytes.substr(8, length));
    CHECK(header["__metadata__"]["format"] == "pt");
    CHECK(header["big"]["dtype"] == "F64");
    CHECK(header["big"]["data_offsets"] == nlohmann::json::array({0, 16}));  // 8-byte elements first
    CHECK(header["small"]["dtype"] == "I8");
    CHECK(header["small"]["shape"] == nlohmann::json::array({3}));
    CHECK(header["small"]["data_offsets"] == nlohmann::json::array({16, 19}));
  }

  TEST_CASE("bad files are errors that name the file and the problem") {
    TempDir dir;
    const auto file = dir.path / "bad.safetensors";
    const auto f32 = [](const std::string& offsets, const std::string& shape = "[2]") {
      return R"({"t": {"dtype": "F32", "shape": )" + shape + R"(, "data_offsets": )" + offsets + "}}";
    };

    CHECK(contains(load_error(dir.path / "none.safetensors"), "does not exist"));
    write_text(file, "abc");
    CHECK(contains(load_error(file), "3 bytes, too short for the 8-byte header length"));
    write_raw(file, "{}", 0, 1000);
    CHECK(contains(load_error(file), "header length is 1000 bytes but the file has only 2 bytes after the length"));
    write_raw(file, "{\"t\": {\"dtype\": ", 0);
    CHECK(contains(load_error(file), "header is not valid JSON"));
    write_raw(file, "[1, 2]", 0);
    CHECK(contains(load_error(file), "header is JSON but not an object"));
    write_raw(file, f32("[0, 8]"), 4);
    CHECK(contains(load_error(file), "tensor 't': data_offsets [0, 8] lie outside the data section of 4 bytes"));
    write_raw(file, f32("[0, 12]", "[2]"), 12);
    CHECK(contains(load_error(file), "shape [2] of F32 needs 8 bytes but data_offsets hold 12"));
    write_raw(file, f32("[8, 4]"), 8);
    CHECK(contains(load_error(file), "data_offsets [8, 4] lie outside"));
    write_raw(file, f32("[0, -8]"), 8);
    CHECK(contains(load_error(file), "is not a pair of non-negative integers"));
    write_raw(file, f32("[0, 8]", "[2, -1]"), 8);
    CHECK(contains(load_error(file), "is not a list of non-negative integers"));
    write_raw(file, f32("[0, 8]", "[2.0]"), 8);
    CHECK(contains(load_error(file), "is not a list of non-negative integers"));
    write_raw(file, f32("[0, 0]", "[4611686018427387904, 4611686018427387904, 0]"), 0);
    CHECK(contains(load_error(file), "too large for a tensor"));
    write_raw(file, f32("[0, 8]", "[2147483648, 2147483648]"), 8);
    CHECK(contains(load_error(file), "more bytes than fit in 64 bits"));
    write_raw(file, R"({"t": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}})", 8);
    CHECK(contains(load_error(file), "dtype 'C64', which acc does not read"));
    write_raw(file, R"({"t": {"dtype": "F32", "shape": [1]}})", 4);
    CHECK(contains(load_error(file), "tensor 't' has no \"data_offsets\""));
    write_raw(file,
              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
              12);
    CHECK(contains(load_error(file), "tensor 'b' starts at byte 4 of the data section, expected 8"));
    write_raw(file, f32("[0, 8]"), 12);
    CHECK(contains(load_error(file), "its tensors cover 8 bytes but the data section has 12"));
    write_raw(file, R"({"__metadata__": {"format": 1}})", 0);
    CHECK(contains(load_error(file), "__metadata__ value of 'format' is not a string"));
    write_raw(file, std::string(100000, '[') + std::string(100000, ']'), 0);
    CHECK(contains(load_error(file), "not an object"));  // deep nesting: an error, not a crash
  }

  TEST_CASE("every truncation of a valid file, and every corrupted header byte, is an error or a valid read") {
    TempDir dir;
    const auto file = dir.path / "x.safetensors";
    const auto good = valid_file_bytes(file);
    for (std::size_t size = 0; size < good.size(); ++size) {
      write_text(file, good.substr(0, size));
      CHECK_FALSE(error_of([&] { acc::safetensors::load_file(file); }).empty());
    }
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = length << 8 | static_cast<unsigned char>(good[static_cast<std::size_t>(i)]);
    int errors = 0;
    for (std::size_t at = 0; at < 8 + length; ++at)
      for (const char replacement : {'\0', '9', '"', '}', '\xff'}) {
        auto bytes = good;
        bytes[at] = replacement;
        write_text(file, bytes);
        errors += !error_of([&] { acc::safetensors::load_file(file); }).empty();
      }
    CHECK(errors > 0);
  }

  TEST_CASE("bytes in memory read as the file they came from, and are checked the same way") {
    TempDir dir;
    const auto file = dir.path / "x.safetensors";
    acc::safetensors::save_file(every_dtype(), file, {{"format", "pt"}});
    const auto bytes = read_text(file);
    const auto from_file = acc::safetensors::load_file(file);
    const auto from_bytes = acc::safetensors::load(bytes);
    CHECK(from_bytes.metadata == from_file.metadata);
    REQUIRE(from_bytes.tensors.size() == from_file.tensors.size());
    for (const auto& [name, tensor] : from_file.tensors) {
      CAPTURE(name);
      CHECK(from_bytes.tensors.at(name).equal(tensor));
    }
    const auto truncated = error_of([&] { acc::safetensors::load(bytes.substr(0, bytes.size() - 1)); });
    CHECK(truncated.rfind("safetensors bytes: tensor '", 0) == 0);
    CHECK(contains(truncated, "lie outside the data section"));
    CHECK(error_of([&] { acc::safetensors::load(std::string("\x10\0\0\0", 4)); }) ==
          "safetensors bytes: it is 4 bytes, too short for the 8-byte header length (truncated?)");
  }

  TEST_CASE("the writer refuses what the format cannot hold") {
    TempDir dir;
    const auto file = dir.path / "x.safetensors";
    const auto error = [&](const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
      return error_of([&] { acc::safetensors::save_file(tensors, file); });
    };
    CHECK(contains(error({{"a", at::ones(1)}, {"a", at::ones(2)}}), "two tensors are named 'a'"));
    CHECK(contains(error({{"__metadata__", at::ones(1)}}), "may not be named __metadata__"));
    CHECK(contains(error({{"c", at::ones(1, at::kComplexFloat)}}), "tensor 'c' is ComplexFloat"));
    CHECK(contains(error({{"m", at::empty({2, 3}, at::kMeta)}}), "tensor 'm' has no values (a meta tensor"));
    CHECK_FALSE(std::filesystem::exists(file));  // refused before anything is written
    CHECK(error({{"a", at::ones(1)}}).empty());
    CHECK(contains(error_of([&] { acc::safetensors::save_file({}, dir.path / "no" / "dir" / "x"); }), "cannot create"));
  }

  TEST_CASE("a tensor mapped from the file equals the one read, is the same memory each time, and outlives the File") {
    TempDir dir;
    const auto tensors = every_dtype();
    acc::safetensors::save_file(tensors, dir.path / "all.safetensors");
    at::Tensor kept;
    {
      const acc::safetensors::File file(dir.path / "all.safetensors");
      for (const auto& [name, tensor] : tensors) {
        CAPTURE(name);
        const auto mapped = file.map(name);
        CHECK(at::equal(mapped, tensor));
        CHECK(at::equal(mapped, file.read(name)));
      }
      // A view of the mapping, not a fresh read: every call, and every copy of the File, sees the same memory.
      CHECK(file.map("Float").data_ptr() == file.map("Float").data_ptr());
      const auto copy = file;
      CHECK(copy.map("Float").data_ptr() == file.map("Float").data_ptr());
      kept = file.map("Double");
    }
    CHECK(at::equal(kept, tensors.front().second));  // the tensor holds the mapping
    kept.fill_(1);                                   // a private mapping: the file keeps its values
    CHECK(at::equal(acc::safetensors::File(dir.path / "all.safetensors").read("Double"), tensors.front().second));
    CHECK(contains(error_of([&] { acc::safetensors::File(dir.path / "all.safetensors").map("nothing"); }),
                   "has no tensor 'nothing'"));
  }
}
