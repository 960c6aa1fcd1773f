// The bodies of detail/mapped_file.hpp.
#pragma once

#include <acc/detail/files.hpp>
#include <acc/detail/mapped_file.hpp>
#include <acc/error.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace acc::detail {

ACC_DECL MappedFile::MappedFile(const std::filesystem::path& file) {
  const auto fail = [&](const std::string& what) {
    throw Error("cannot map '" + file.string() + "' into memory: " + what + ": " + system_error_text(errno));
  };
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open");
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    ::close(fd);
    fail("fstat");
  }
  size_ = static_cast<std::size_t>(status.st_size);
  if (size_ > 0) {
    // Private and writable: a tensor over it may be written (copy on write), never the file.
    void* address = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      ::close(fd);
      fail("mmap");
    }
    data_ = static_cast<unsigned char*>(address);
  }
  ::close(fd);  // the mapping keeps the file
}

ACC_DECL MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace acc::detail
