// safetensors files (https://github.com/huggingface/safetensors), the format of Hugging Face model
// weights, readable by Python's `safetensors.torch.load_file`: an 8-byte little-endian header
// length, a JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
// {string: string}}, then the tensors' raw little-endian bytes, back to back.
//
//   acc::safetensors::save_file({{"weight", w}, {"bias", b}}, "model.safetensors", {{"format", "pt"}});
//   auto contents = acc::safetensors::load_file("model.safetensors");  // .tensors, .metadata
//   auto same = acc::safetensors::load(bytes);                          // from memory
//
// The reader trusts nothing in the file: every length and offset is checked against the file's
// size and the tensors' shapes, and a bad file is an acc::Error naming the file and the problem.
// It only copies bytes into tensors: nothing in a file is executed (unlike a pickled checkpoint).
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/detail/mapped_file.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; this reader and writer copy bytes as they are");

namespace acc::safetensors {

using Metadata = std::map<std::string, std::string>;

struct Contents {
  std::map<std::string, at::Tensor> tensors;  // on the CPU
  Metadata metadata;
  uint32_t crc32c = 0;  // of the file's bytes, computed as they were read
};

// What save_file wrote.
struct Written {
  uint64_t size = 0;
  uint32_t crc32c = 0;
};

// The largest header the reader accepts (the Rust reference implementation's limit).
inline constexpr uint64_t kMaxHeaderSize = 100'000'000;

// Writes the tensors (from any device; non-contiguous ones are copied, one at a time) and the
// metadata, and syncs the file to disk; first checks that its file system has room for it. Names
// must be unique and not "__metadata__".
ACC_DECL Written save_file(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                           const std::filesystem::path& file, const Metadata& metadata = {});

// Reads every tensor (onto the CPU) and the metadata.
ACC_DECL Contents load_file(const std::filesystem::path& file);

// The same from the bytes of a whole safetensors file (Python's safetensors.torch.load).
ACC_DECL Contents load(std::string_view bytes);

// The safetensors name of a dtype ("F32", "BF16", ...); an acc::Error for one the format here lacks.
ACC_DECL std::string dtype_name(at::ScalarType type);

// What the header says of one tensor; begin and end are byte offsets in the file.
struct TensorInfo {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A safetensors file read a tensor (or a piece of one) at a time (Python's safe_open): the header
// is read and checked when it opens, as load_file checks it; the bytes are read on demand.
//
//   acc::safetensors::File file("model_rank1.safetensors");
//   auto slice = file.read_elements("layer.flat_shard", 100, 50);  // elements 100..149, flattened
class File {
 public:
  ACC_DECL explicit File(const std::filesystem::path& file);
  const std::filesystem::path& path() const { return path_; }
  const Metadata& metadata() const { return metadata_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  // Throws an acc::Error naming the file when it has no tensor `name`.
  ACC_DECL const TensorInfo& info(const std::string& name) const;
  // The whole tensor, on the CPU.
  ACC_DECL at::Tensor read(const std::string& name) const;
  // Elements [offset, offset + numel) of the tensor in its flattened order, as a 1-D CPU tensor.
  ACC_DECL at::Tensor read_elements(const std::string& name, int64_t offset, int64_t numel) const;
  // The whole tensor as a view of the file mapped into memory: nothing is read or copied until its
  // pages are touched, and every call gives the same memory. The tensor keeps the mapping alive
  // (also after the File goes); writing to it changes this process's pages, not the file. A tensor
  // not aligned to its element size in the file is read instead.
  ACC_DECL at::Tensor map(const std::string& name) const;

 private:
  std::filesystem::path path_;
  // The file mapped by the first map(), shared by copies of the File.
  struct Mapping {
    std::once_flag once;
    std::shared_ptr<const acc::detail::MappedFile> file;
  };
  std::shared_ptr<Mapping> mapping_ = std::make_shared<Mapping>();
  Metadata metadata_;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace acc::safetensors

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/safetensors.ipp>
#endif
