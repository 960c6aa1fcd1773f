#pragma once

#include <acc/detail/crc32c.hpp>
#include <acc/error.hpp>
#include <acc/tracking/tfrecord.hpp>

#include <fstream>
#include <iterator>

namespace acc::detail {

ACC_DECL std::string little_endian(uint64_t value, int bytes) {
  std::string out(static_cast<std::size_t>(bytes), '\0');
  for (int i = 0; i < bytes; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((value >> (8 * i)) & 0xFFu);
  return out;
}

ACC_DECL uint64_t read_little_endian(std::string_view bytes) {
  uint64_t value = 0;
  for (std::size_t i = bytes.size(); i-- > 0;) value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  return value;
}

ACC_DECL std::string tfrecord(std::string_view data) {
  const auto length = little_endian(data.size(), 8);
  return length + little_endian(masked_crc32c(length), 4) + std::string(data) + little_endian(masked_crc32c(data), 4);
}

ACC_DECL std::vector<std::string> read_tfrecords(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read the TFRecord file '" + path.string() + "'");
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::string_view all(bytes);
  std::vector<std::string> records;
  std::size_t offset = 0;
  const auto fail = [&](const std::string& problem) {
    throw Error("'" + path.string() + "' at byte " + std::to_string(offset) + ": " + problem +
                " (not a complete TFRecord file; was it written to the end?)");
  };
  while (offset < all.size()) {
    if (all.size() - offset < 12) fail("a record header is cut short");
    const auto length_bytes = all.substr(offset, 8);
    if (read_little_endian(all.substr(offset + 8, 4)) != masked_crc32c(length_bytes))
      fail("the length's checksum does not match");
    const uint64_t length = read_little_endian(length_bytes);
    if (length > all.size() - offset - 12 || all.size() - offset - 12 - length < 4) fail("a record is cut short");
    const auto data = all.substr(offset + 12, length);
    if (read_little_endian(all.substr(offset + 12 + length, 4)) != masked_crc32c(data))
      fail("the data's checksum does not match");
    records.emplace_back(data);
    offset += 12 + length + 4;
  }
  return records;
}

}  // namespace acc::detail
