// TFRecord framing, as TensorBoard's event files use it: each record is its length (uint64,
// little-endian), the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the
// data. The reader checks both checksums.
#pragma once

#include <acc/detail/linkage.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace acc::detail {

ACC_DECL std::string little_endian(uint64_t value, int bytes);
ACC_DECL uint64_t read_little_endian(std::string_view bytes);

// One record: the framed data.
ACC_DECL std::string tfrecord(std::string_view data);

// The records of a TFRecord file, each checked against its checksums; a truncated or corrupt
// file is an acc::Error naming the file and the byte offset.
ACC_DECL std::vector<std::string> read_tfrecords(const std::filesystem::path& path);

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/tfrecord.ipp>
#endif
