// Files that survive a crash (POSIX, Linux): writes made durable with fsync, and directories
// swapped into place with one rename, for checkpoints that are either complete or absent; a full
// disk or a file size limit named as such, with the bytes needed and free.
#pragma once

#include <acc/detail/crc32c.hpp>
#include <acc/error.hpp>

#include <fcntl.h>
#include <ftw.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

namespace acc::detail {

inline std::string system_error_text(int error) { return std::strerror(error); }

// The directory a path is in ("." for a bare name).
inline std::filesystem::path parent_directory(const std::filesystem::path& path) {
  const auto parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

// Bytes that this (unprivileged) process may still write on the file system holding `path`.
inline std::optional<uint64_t> free_bytes(const std::filesystem::path& path) {
  struct statvfs fs {};
  if (::statvfs(path.c_str(), &fs) != 0) return std::nullopt;
  return static_cast<uint64_t>(fs.f_bavail) * static_cast<uint64_t>(fs.f_frsize);
}

// Throws when the file system holding the directory `dir` has fewer than `needed` bytes free for
// `what`, before anything is written.
inline void require_free_space(const std::filesystem::path& dir, uint64_t needed, const std::string& what) {
  const auto free = free_bytes(dir);
  if (!free || *free >= needed) return;
  throw Error("not enough space in '" + dir.string() + "': " + what + " needs at least " + std::to_string(needed) +
              " bytes and its file system has " + std::to_string(*free) + " bytes free (" +
              std::to_string(needed - *free) + " short); free some space or write elsewhere");
}

// Why writing `file` stopped after `written` bytes (of `needed`, 0 when unknown), in words: a full
// disk or a file size limit says so with the bytes needed and free.
inline std::string write_failure(const std::filesystem::path& file, int error, uint64_t written, uint64_t needed) {
  const auto total = needed > 0 ? " of the " + std::to_string(needed) + " it needs" : std::string();
  const auto at = " after " + std::to_string(written) + " bytes" + total;
  if (error == ENOSPC || error == EDQUOT) {
    const auto dir = parent_directory(file);
    const auto free = free_bytes(dir);
    return "cannot write '" + file.string() + "': the file system holding '" + dir.string() + "' is full (" +
           system_error_text(error) + ")" + at + "; " + (free ? std::to_string(*free) : std::string("?")) +
           " bytes are free there; free some space or write elsewhere";
  }
  if (error == EFBIG) {
    struct rlimit limit {};
    const bool limited = ::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY;
    return "cannot write '" + file.string() + "': " + system_error_text(error) + at +
           (limited ? "; this process may write files of at most " + std::to_string(limit.rlim_cur) +
                          " bytes (ulimit -f): raise the limit"
                    : std::string());
  }
  return "cannot write '" + file.string() + "': " + system_error_text(error) + at;
}

// A file opened for writing (created or truncated); close() makes its contents durable. It keeps
// the CRC-32C of what was written; `needed` (0: unknown) is the size it will have, for messages.
class SyncedFile {
 public:
  explicit SyncedFile(std::filesystem::path path, uint64_t needed = 0) : path_(std::move(path)), needed_(needed) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      const int error = errno;
      throw Error(error == ENOSPC || error == EDQUOT
                      ? write_failure(path_, error, 0, needed_)
                      : "cannot create '" + path_.string() + "': " + system_error_text(error));
    }
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
        throw Error(write_failure(path_, errno, size_, needed_));
      }
      crc_ = crc32c_extend(crc_, bytes, static_cast<std::size_t>(written));
      size_ += static_cast<uint64_t>(written);
      bytes += written;
      size -= static_cast<std::size_t>(written);
    }
  }

  void close() {
    const bool synced = ::fsync(fd_) == 0;
    const int sync_error = errno;
    const bool closed = ::close(fd_) == 0;
    const int close_error = errno;
    fd_ = -1;
    if (!synced || !closed) throw Error(write_failure(path_, synced ? close_error : sync_error, size_, needed_));
  }

  uint64_t size() const { return size_; }
  uint32_t crc32c() const { return crc_; }

 private:
  std::filesystem::path path_;
  uint64_t needed_ = 0;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint32_t crc_ = 0;
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
    if (std::rename(target.c_str(), retired.c_str()) != 0)
      throw Error("cannot move '" + target.string() + "' aside: " + system_error_text(errno));
    if (std::rename(staged.c_str(), target.c_str()) != 0) {
      const int error = errno;
      std::rename(retired.c_str(), target.c_str());  // the previous contents go back in place
      throw Error("cannot move '" + staged.string() + "' to '" + target.string() + "': " + system_error_text(error));
    }
  }
  fsync_path(parent_directory(target));
  remove_tree(retired);
}

}  // namespace acc::detail
