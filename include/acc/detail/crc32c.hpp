// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord files checksum their
// records, and TFRecord's "masked" form of it (rotated and offset, so that a CRC of data that
// holds CRCs stays well distributed).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace acc::detail {

inline const std::array<uint32_t, 256>& crc32c_table() {
  static const auto table = [] {
    std::array<uint32_t, 256> entries{};
    for (uint32_t byte = 0; byte < 256; ++byte) {
      uint32_t crc = byte;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (crc & 1u ? 0x82F63B78u : 0u);
      entries[byte] = crc;
    }
    return entries;
  }();
  return table;
}

inline uint32_t crc32c(std::string_view bytes) {
  const auto& table = crc32c_table();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) crc = table[(crc ^ byte) & 0xFFu] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

inline uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t crc = crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

}  // namespace acc::detail
