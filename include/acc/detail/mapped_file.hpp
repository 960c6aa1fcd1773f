// A whole file mapped into memory (POSIX mmap), private to this process: its pages are read from
// the file (or the page cache) as they are touched, and a write to them stays in this process. For
// tensors that are views of a file (safetensors::File::map); the file must not shrink while it is
// mapped (a page beyond its new end would fault).
#pragma once

#include <acc/detail/linkage.hpp>

#include <cstddef>
#include <filesystem>

namespace acc::detail {

class MappedFile {
 public:
  // An acc::Error naming the file and the system's reason when it cannot be opened or mapped.
  ACC_DECL explicit MappedFile(const std::filesystem::path& file);
  ACC_DECL ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/detail/impl/mapped_file.ipp>
#endif
