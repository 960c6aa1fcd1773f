// The bodies of safetensors.hpp: the checked reader and the writer (nlohmann/json stays here).
#pragma once

#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/crc32c.hpp>
#include <acc/detail/files.hpp>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/ScalarType.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <optional>
#include <system_error>
#include <tuple>

namespace acc::safetensors {

namespace detail {

struct DType {
  std::string_view name;
  at::ScalarType type;
};
inline constexpr std::array<DType, 10> kDTypes{{{"F64", at::kDouble},
                                                {"F32", at::kFloat},
                                                {"F16", at::kHalf},
                                                {"BF16", at::kBFloat16},
                                                {"I64", at::kLong},
                                                {"I32", at::kInt},
                                                {"I16", at::kShort},
                                                {"I8", at::kChar},
                                                {"U8", at::kByte},
                                                {"BOOL", at::kBool}}};

inline std::string supported_dtypes() {
  std::string names;
  for (const auto& d : kDTypes) names += (names.empty() ? "" : ", ") + std::string(d.name);
  return names;
}

inline std::optional<at::ScalarType> scalar_type(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.type;
  return std::nullopt;
}

inline std::optional<std::string_view> dtype_name(at::ScalarType type) {
  for (const auto& d : kDTypes)
    if (d.type == type) return d.name;
  return std::nullopt;
}

// One tensor's entry in the header, checked.
struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Where a reader's bytes come from: a file, read piece by piece, or bytes already in memory.
// read_at returns false when fewer than `size` bytes were there to read.
class FileBytes {
 public:
  explicit FileBytes(const std::filesystem::path& file) : in_(file, std::ios::binary) {
    if (in_) {
      in_.seekg(0, std::ios::end);
      size_ = static_cast<uint64_t>(in_.tellg());
    }
  }
  bool is_open() const { return static_cast<bool>(in_); }
  uint64_t size() const { return size_; }
  bool read_at(uint64_t offset, void* into, std::size_t size) {
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(static_cast<char*>(into), static_cast<std::streamsize>(size));
    return static_cast<std::size_t>(in_.gcount()) == size;
  }

 private:
  std::ifstream in_;
  uint64_t size_ = 0;
};

class MemoryBytes {
 public:
  explicit MemoryBytes(std::string_view bytes) : bytes_(bytes) {}
  uint64_t size() const { return bytes_.size(); }
  bool read_at(uint64_t offset, void* into, std::size_t size) const {
    if (offset > bytes_.size() || size > bytes_.size() - offset) return false;
    std::copy_n(bytes_.data() + offset, size, static_cast<char*>(into));
    return true;
  }

 private:
  std::string_view bytes_;
};

// Reads safetensors from bytes (FileBytes or MemoryBytes); `origin` names them in messages
// ("safetensors file 'model.safetensors'").
class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}

  // The header's entries (checked, with offsets relative to the data section), its metadata and
  // where the data section starts; reads nothing else.
  template <class Bytes>
  std::vector<Entry> read_header(Bytes& bytes, Metadata& metadata, uint64_t& data_start) {
    const uint64_t total_size = bytes.size();
    if (total_size < 8)
      fail("it is " + std::to_string(total_size) + " bytes, too short for the 8-byte header length (truncated?)");
    unsigned char length_bytes[8];
    if (!bytes.read_at(0, length_bytes, 8)) fail("cannot read the header length (the file changed?)");
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = header_size << 8 | length_bytes[i];
    if (header_size > total_size - 8)
      fail("its header length is " + std::to_string(header_size) + " bytes but the file has only " +
           std::to_string(total_size - 8) + " bytes after the length (truncated, or not a safetensors file)");
    if (header_size > kMaxHeaderSize)
      fail("its header length " + std::to_string(header_size) + " exceeds the limit of " +
           std::to_string(kMaxHeaderSize) + " bytes");
    std::string header(static_cast<std::size_t>(header_size), '\0');
    if (!bytes.read_at(8, header.data(), header.size())) fail("cannot read the header (the file changed?)");
    const uint64_t data_size = total_size - 8 - header_size;
    auto entries = parse(header, data_size, metadata);
    check_layout(entries, data_size);
    data_start = 8 + header_size;
    return entries;
  }

  template <class Bytes>
  Contents read(Bytes& bytes) {
    const uint64_t total_size = bytes.size();
    if (total_size < 8)
      fail("it is " + std::to_string(total_size) + " bytes, too short for the 8-byte header length (truncated?)");
    unsigned char length_bytes[8];
    read_exactly(bytes, 0, length_bytes, 8, "the header length");
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = header_size << 8 | length_bytes[i];
    if (header_size > total_size - 8)
      fail("its header length is " + std::to_string(header_size) + " bytes but the file has only " +
           std::to_string(total_size - 8) + " bytes after the length (truncated, or not a safetensors file)");
    if (header_size > kMaxHeaderSize)
      fail("its header length " + std::to_string(header_size) + " exceeds the limit of " +
           std::to_string(kMaxHeaderSize) + " bytes");
    std::string header(static_cast<std::size_t>(header_size), '\0');
    read_exactly(bytes, 8, header.data(), header.size(), "the header");
    const uint64_t data_size = total_size - 8 - header_size;

    Contents contents;
    auto entries = parse(header, data_size, contents.metadata);
    check_layout(entries, data_size);
    const uint64_t data_start = 8 + header_size;
    for (auto& e : entries) {
      auto tensor = at::empty(e.shape, at::TensorOptions().dtype(e.type));
      if (e.end > e.begin)
        read_exactly(bytes, data_start + e.begin, tensor.data_ptr(), static_cast<std::size_t>(e.end - e.begin),
                     "tensor '" + e.name + "'");
      contents.tensors.emplace(std::move(e.name), std::move(tensor));
    }
    // The layout check made the reads cover the file from start to end, in order.
    contents.crc32c = crc_;
    return contents;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw Error(origin_ + ": " + problem); }

  template <class Bytes>
  void read_exactly(Bytes& bytes, uint64_t offset, void* into, std::size_t size, const std::string& what) {
    if (!bytes.read_at(offset, into, size)) fail("cannot read " + what + " (the file changed?)");
    if (offset != read_up_to_) fail("cannot read " + what + " in file order");
    crc_ = acc::detail::crc32c_extend(crc_, into, size);
    read_up_to_ += size;
  }

  std::vector<Entry> parse(const std::string& header, uint64_t data_size, Metadata& metadata) const {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(header);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("its header is not valid JSON: ") + e.what());
    }
    if (!json.is_object()) fail("its header is JSON but not an object");
    std::vector<Entry> entries;
    for (const auto& [name, value] : json.items()) {
      if (name == "__metadata__") {
        if (!value.is_object()) fail("__metadata__ is not an object");
        for (const auto& [key, text] : value.items()) {
          if (!text.is_string()) fail("__metadata__ value of '" + key + "' is not a string");
          metadata.emplace(key, text.get<std::string>());
        }
      } else {
        entries.push_back(entry(name, value, data_size));
      }
    }
    return entries;
  }

  Entry entry(const std::string& name, const nlohmann::json& value, uint64_t data_size) const {
    const auto where = "tensor '" + name + "'";
    if (!value.is_object()) fail(where + " is not described by an object");
    const auto field = [&](const char* key) -> const nlohmann::json& {
      const auto it = value.find(key);
      if (it == value.end()) fail(where + " has no \"" + key + "\"");
      return *it;
    };
    const auto& dtype = field("dtype");
    if (!dtype.is_string()) fail(where + ": dtype is not a string");
    const auto type = scalar_type(dtype.get<std::string>());
    if (!type)
      fail(where + " has dtype '" + dtype.get<std::string>() + "', which acc does not read (it reads " +
           supported_dtypes() + ")");

    const auto& shape_json = field("shape");
    if (!shape_json.is_array()) fail(where + ": shape is not an array");
    std::vector<int64_t> shape;
    uint64_t bytes = c10::elementSize(*type);
    bool overflow = false;
    int64_t stride = 1;  // the largest stride of the tensor, which must fit libtorch's int64 strides
    for (const auto& dim : shape_json) {
      if (!dim.is_number_unsigned() || dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        fail(where + ": shape " + shape_json.dump() + " is not a list of non-negative integers");
      const auto size = static_cast<int64_t>(dim.get<uint64_t>());
      shape.push_back(size);
      overflow = overflow || __builtin_mul_overflow(bytes, dim.get<uint64_t>(), &bytes);
      if (__builtin_mul_overflow(stride, std::max<int64_t>(size, 1), &stride))
        fail(where + ": shape " + shape_json.dump() + " is too large for a tensor");
    }

    const auto& offsets = field("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail(where + ": data_offsets " + offsets.dump() + " is not a pair of non-negative integers");
    const auto begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
           "] lie outside the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
    if (overflow || bytes != end - begin)
      fail(where + ": shape " + shape_json.dump() + " of " + std::string(dtype.get<std::string>()) + " needs " +
           (overflow ? std::string("more bytes than fit in 64 bits") : std::to_string(bytes) + " bytes") +
           " but data_offsets hold " + std::to_string(end - begin));
    return {name, *type, std::move(shape), begin, end};
  }

  // Like the reference implementation: the tensors' bytes follow each other without gap or
  // overlap and fill the data section exactly.
  void check_layout(std::vector<Entry>& entries, uint64_t data_size) const {
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
    uint64_t expected = 0;
    for (const auto& e : entries) {
      if (e.begin != expected)
        fail("tensor '" + e.name + "' starts at byte " + std::to_string(e.begin) + " of the data section, expected " +
             std::to_string(expected) + " (tensors overlap or leave a gap)");
      expected = e.end;
    }
    if (expected != data_size)
      fail("its tensors cover " + std::to_string(expected) + " bytes but the data section has " +
           std::to_string(data_size));
  }

  std::string origin_;
  uint64_t read_up_to_ = 0;  // the bytes before this offset were read, into crc_
  uint32_t crc_ = 0;
};

}  // namespace detail

ACC_DECL Written save_file(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                           const std::filesystem::path& file, const Metadata& metadata) {
  const auto fail = [&](const std::string& problem) {
    throw Error("cannot write safetensors file '" + file.string() + "': " + problem);
  };
  struct Item {
    std::string_view name;
    std::string_view dtype;
    const at::Tensor* tensor;
    uint64_t bytes;
  };
  std::vector<Item> items;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail("a tensor may not be named __metadata__");
    if (!tensor.defined()) fail("tensor '" + name + "' is undefined");
    if (tensor.is_meta())
      fail("tensor '" + name +
           "' has no values (a meta tensor: built under acc::init_empty_weights, or an offloaded weight of a "
           "dispatched model between its calls); give it its values first (acc::load_checkpoint_in_model)");
    const auto dtype = detail::dtype_name(tensor.scalar_type());
    if (!dtype)
      fail("tensor '" + name + "' is " + std::string(c10::toString(tensor.scalar_type())) +
           ", which safetensors files here hold only as " + detail::supported_dtypes());
    items.push_back({name, *dtype, &tensor, static_cast<uint64_t>(tensor.numel()) * tensor.element_size()});
  }
  // Larger elements first, as Python's writer does: every tensor then starts at a multiple of its
  // element size (the header is padded to 8 bytes).
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return std::make_pair(-static_cast<int64_t>(a.tensor->element_size()), a.name) <
           std::make_pair(-static_cast<int64_t>(b.tensor->element_size()), b.name);
  });
  for (std::size_t i = 1; i < items.size(); ++i)
    if (items[i].name == items[i - 1].name) fail("two tensors are named '" + std::string(items[i].name) + "'");

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& item : items) {
    header[std::string(item.name)] = {
        {"dtype", item.dtype}, {"shape", item.tensor->sizes().vec()}, {"data_offsets", {offset, offset + item.bytes}}};
    offset += item.bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("a name or metadata value is not valid UTF-8: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  const uint64_t size = 8 + text.size() + offset;
  acc::detail::require_free_space(acc::detail::parent_directory(file), size, "'" + file.string() + "'");
  acc::detail::SyncedFile out(file, size);
  out.write(length, 8);
  out.write(text.data(), text.size());
  for (const auto& item : items) {
    const auto data = item.tensor->detach().to(at::kCPU).contiguous();
    out.write(data.data_ptr(), item.bytes);
  }
  out.close();
  return {out.size(), out.crc32c()};
}

ACC_DECL Contents load_file(const std::filesystem::path& file) {
  const std::string origin = "safetensors file '" + file.string() + "'";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw Error(origin + ": " + (std::filesystem::exists(file, ec) ? "it is not a regular file" : "it does not exist"));
  detail::FileBytes bytes(file);
  if (!bytes.is_open()) throw Error(origin + ": cannot open it: " + acc::detail::system_error_text(errno));
  return detail::Reader(origin).read(bytes);
}

ACC_DECL std::string dtype_name(at::ScalarType type) {
  const auto name = detail::dtype_name(type);
  if (!name)
    throw Error(std::string("dtype ") + c10::toString(type) + " has no safetensors name here (there are " +
                detail::supported_dtypes() + ")");
  return std::string(*name);
}

ACC_DECL File::File(const std::filesystem::path& file) : path_(file) {
  const std::string origin = "safetensors file '" + file.string() + "'";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw Error(origin + ": " + (std::filesystem::exists(file, ec) ? "it is not a regular file" : "it does not exist"));
  detail::FileBytes bytes(file);
  if (!bytes.is_open()) throw Error(origin + ": cannot open it: " + acc::detail::system_error_text(errno));
  uint64_t data_start = 0;
  for (auto& e : detail::Reader(origin).read_header(bytes, metadata_, data_start))
    tensors_.emplace(std::move(e.name),
                     TensorInfo{e.type, std::move(e.shape), data_start + e.begin, data_start + e.end});
}

ACC_DECL const TensorInfo& File::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error("safetensors file '" + path_.string() + "' has no tensor '" + name + "'");
  return it->second;
}

ACC_DECL at::Tensor File::read(const std::string& name) const {
  const auto& t = info(name);
  int64_t numel = 1;
  for (const auto d : t.shape) numel *= d;
  return read_elements(name, 0, numel).view(t.shape);
}

ACC_DECL at::Tensor File::read_elements(const std::string& name, int64_t offset, int64_t numel) const {
  const auto& t = info(name);
  const auto element = static_cast<uint64_t>(c10::elementSize(t.dtype));
  const uint64_t available = (t.end - t.begin) / element;
  if (offset < 0 || numel < 0 || static_cast<uint64_t>(offset) > available ||
      static_cast<uint64_t>(numel) > available - static_cast<uint64_t>(offset))
    throw Error("safetensors file '" + path_.string() + "': elements [" + std::to_string(offset) + ", " +
                std::to_string(offset + numel) + ") lie outside tensor '" + name + "' of " + std::to_string(available) +
                " elements");
  auto out = at::empty({numel}, at::TensorOptions().dtype(t.dtype));
  if (numel == 0) return out;
  detail::FileBytes bytes(path_);
  if (!bytes.is_open() || !bytes.read_at(t.begin + static_cast<uint64_t>(offset) * element, out.data_ptr(),
                                         static_cast<std::size_t>(numel) * element))
    throw Error("safetensors file '" + path_.string() + "': cannot read tensor '" + name +
                "' (the file changed or went?)");
  return out;
}

ACC_DECL at::Tensor File::map(const std::string& name) const {
  const auto& t = info(name);
  const auto element = static_cast<uint64_t>(c10::elementSize(t.dtype));
  if (t.end == t.begin || t.begin % element != 0) return read(name);
  std::call_once(mapping_->once, [&] { mapping_->file = std::make_shared<const acc::detail::MappedFile>(path_); });
  const auto mapping = mapping_->file;
  if (mapping->size() < t.end)
    throw Error("safetensors file '" + path_.string() + "': cannot map tensor '" + name +
                "', the file is shorter than when it was opened (it changed?)");
  // The mapping starts on a page: the tensor is aligned in memory as its offset in the file is.
  return at::from_blob(
      mapping->data() + t.begin, t.shape, [mapping](void*) {}, at::TensorOptions().dtype(t.dtype));
}

ACC_DECL Contents load(std::string_view bytes) {
  detail::MemoryBytes source(bytes);
  return detail::Reader("safetensors bytes").read(source);
}

}  // namespace acc::safetensors
