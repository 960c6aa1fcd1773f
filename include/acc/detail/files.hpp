// Files that survive a crash (POSIX, Linux): writes made durable with fsync, and directories
// swapped into place with one rename, for checkpoints that are either complete or absent.
#pragma once

#include <acc/error.hpp>

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

namespace acc::detail {

inline std::string system_error_text(int error) { return std::strerror(error); }

// A file opened for writing (created or truncated); close() makes its contents durable.
class SyncedFile {
 public:
  explicit SyncedFile(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot create '" + path_.string() + "': " + system_error_text(errno));
  }
  SyncedFile(const SyncedFile&) = delete;
  SyncedFile& operator=(const SyncedFile&) = delete;
  ~SyncedFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  void write(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const char*>(data);
    while (size > 0) {
      const auto written = ::write(fd_, bytes, size);
      if (written < 0) {
        if (errno == EINTR) continue;
        throw Error("cannot write '" + path_.string() + "': " + system_error_text(errno));
      }
      bytes += written;
      size -= static_cast<std::size_t>(written);
    }
  }

  void close() {
    const bool synced = ::fsync(fd_) == 0;
    const int sync_error = errno;
    const bool closed = ::close(fd_) == 0;
    fd_ = -1;
    if (!synced || !closed)
      throw Error("cannot write '" + path_.string() + "' to disk: " + system_error_text(synced ? errno : sync_error));
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Flushes a file or a directory (its entries: names created or renamed in it) to disk.
inline void fsync_path(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open '" + path.string() + "' to sync it: " + system_error_text(errno));
  const bool synced = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced) throw Error("cannot sync '" + path.string() + "' to disk: " + system_error_text(error));
}

inline void write_synced(const std::filesystem::path& path, const std::string& contents) {
  SyncedFile file(path);
  file.write(contents.data(), contents.size());
  file.close();
}

// Removes a file or a whole directory tree; true when nothing is left at `path` (also when there
// was nothing). Not std::filesystem::remove_all: libtorch 2.x wheels export their own copy of
// libstdc++'s directory iteration (pytorch/pytorch#133437), which the dynamic linker may bind in
// place of the one remove_all was compiled against; on the GPU machines that crashed.
inline bool remove_tree(const std::filesystem::path& path) {
  constexpr int max_open_directories = 16;
  const auto remove_entry = [](const char* name, const struct stat*, int, struct FTW*) {
    return ::remove(name) == 0 ? 0 : -1;
  };
  if (::nftw(path.c_str(), remove_entry, max_open_directories, FTW_DEPTH | FTW_PHYS) == 0) return true;
  return errno == ENOENT;
}

// remove_tree that throws an acc::Error naming the path when something is left.
inline void remove_tree_or_throw(const std::filesystem::path& path) {
  if (!remove_tree(path)) throw Error("cannot remove '" + path.string() + "': " + system_error_text(errno));
}

// The directory a path is in ("." for a bare name).
inline std::filesystem::path parent_directory(const std::filesystem::path& path) {
  const auto parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

// Puts the complete directory `staged` at `target`. An existing target is swapped out in one
// step (RENAME_EXCHANGE) and then removed, so that `target` holds either the old or the new
// contents at every moment; where the file system cannot exchange (NFS, for one), the old
// target is first renamed aside, which leaves a short moment without `target`.
inline void replace_directory(const std::filesystem::path& staged, const std::filesystem::path& target) {
  std::error_code ec;
  const bool exists = std::filesystem::exists(target, ec);
  if (exists && !std::filesystem::is_directory(target, ec))
    throw Error("cannot save into '" + target.string() + "': it exists and is not a directory");
  if (!exists) {
    if (std::rename(staged.c_str(), target.c_str()) != 0)
      throw Error("cannot rename '" + staged.string() + "' to '" + target.string() + "': " + system_error_text(errno));
    fsync_path(parent_directory(target));
    return;
  }
  auto retired = staged;  // after the exchange, `staged` names the old contents
#if defined(RENAME_EXCHANGE)
  const bool exchanged = ::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0;
  const int error = errno;
  if (!exchanged && error != EINVAL && error != ENOSYS && error != ENOTSUP)
    throw Error("cannot exchange '" + staged.string() + "' with '" + target.string() +
                "': " + system_error_text(error));
#else
  const bool exchanged = false;
#endif
  if (!exchanged) {
    retired = staged.string() + ".old";
    if (std::rename(target.c_str(), retired.c_str()) != 0 || std::rename(staged.c_str(), target.c_str()) != 0)
      throw Error("cannot move '" + staged.string() + "' to '" + target.string() + "': " + system_error_text(errno));
  }
  fsync_path(parent_directory(target));
  remove_tree(retired);
}

}  // namespace acc::detail
