// The bodies of checkpoint_io.hpp.
#pragma once

#include <acc/checkpoint/checkpoint_io.hpp>
#include <acc/detail/crc32c.hpp>
#include <acc/detail/files.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <system_error>
#include <utility>
#include <vector>

namespace acc::detail {

ACC_DECL CheckpointFile save_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& file) {
  SyncedFile out(file);
  std::optional<Error> failure;
  try {
    archive.save_to([&](const void* data, std::size_t size) -> std::size_t {
      if (!failure) try {
          out.write(data, size);
        } catch (const Error& e) {
          failure = e;
        }
      return size;
    });
  } catch (const c10::Error& e) {
    throw Error("cannot write '" + file.string() + "': " + e.what_without_backtrace());
  }
  if (failure) throw *failure;
  out.close();
  return {out.size(), out.crc32c()};
}

ACC_DECL void check_recorded(const std::filesystem::path& file, const CheckpointFile& recorded, uint64_t size,
                             uint32_t crc) {
  if (size != recorded.size)
    throw DamagedCheckpoint("'" + file.string() + "' is " + std::to_string(size) + " bytes but was saved with " +
                            std::to_string(recorded.size) + " (truncated or overwritten)");
  if (crc != recorded.crc32c)
    throw DamagedCheckpoint("'" + file.string() + "' does not match its checksum: CRC-32C " + crc32c_text(crc) +
                            ", saved as " + crc32c_text(recorded.crc32c) +
                            " (its bytes changed after the save: a storage or copy error, or an edit)");
}

ACC_DECL void check_file(const std::filesystem::path& file, const CheckpointFile& recorded) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw DamagedCheckpoint("cannot read '" + file.string() + "': " + system_error_text(errno));
  std::vector<char> buffer(std::size_t{1} << 22);
  uint64_t size = 0;
  uint32_t crc = 0;
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
    crc = crc32c_extend(crc, buffer.data(), static_cast<std::size_t>(in.gcount()));
    size += static_cast<uint64_t>(in.gcount());
  }
  check_recorded(file, recorded, size, crc);
}

ACC_DECL torch::serialize::InputArchive load_archive(const std::filesystem::path& file,
                                                     const std::optional<CheckpointFile>& recorded,
                                                     std::optional<c10::Device> device) {
  if (recorded) check_file(file, *recorded);
  torch::serialize::InputArchive archive;
  try {
    if (device)
      archive.load_from(file.string(), *device);
    else
      archive.load_from(file.string());
  } catch (const c10::Error& e) {
    throw DamagedCheckpoint("'" + file.string() +
                            "' is not a readable torch archive (truncated or corrupt?): " + e.what_without_backtrace());
  }
  return archive;
}

ACC_DECL std::filesystem::path staging_path(const std::filesystem::path& target, int64_t pid) {
  return target.string() + ".tmp-" + std::to_string(pid);
}

ACC_DECL void remove_stale_staging(const std::filesystem::path& target) {
  const auto prefix = target.filename().string() + ".tmp-";
  std::error_code ec;
  const bool target_exists = std::filesystem::exists(target, ec);
  for (const auto& entry : std::filesystem::directory_iterator(parent_directory(target), ec)) {
    const auto name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    auto digits = std::string_view(name).substr(prefix.size());
    const bool retired = digits.size() > 4 && digits.substr(digits.size() - 4) == ".old";
    if (retired) digits.remove_suffix(4);
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string_view::npos)
      continue;
    const auto pid = static_cast<pid_t>(std::stol(std::string(digits)));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to signal)
    // A replacement killed between moving the previous contents aside and the new ones in (where
    // the directories cannot be exchanged): the previous contents go back, as a save that did not
    // return leaves what was there before.
    if (retired && !target_exists && std::rename(entry.path().c_str(), target.c_str()) == 0) {
      fsync_path(parent_directory(target));
      continue;
    }
    remove_tree_or_throw(entry.path());
  }
}

ACC_DECL std::string damage_of(const std::filesystem::path& dir) {
  try {
    const auto metadata = CheckpointMetadata::read(dir);
    for (const auto& [name, recorded] : metadata.files) {
      const auto file = dir / name;
      std::error_code ec;
      if (!std::filesystem::is_regular_file(file, ec))
        throw DamagedCheckpoint("'" + file.string() + "' is missing (" + CheckpointMetadata::file_name + " lists it)");
      check_file(file, recorded);
    }
  } catch (const DamagedCheckpoint& e) {
    return e.what();
  }
  return "";
}

ACC_DECL FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

ACC_DECL FileLock FileLock::take(const std::filesystem::path& file, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  FileLock lock;
  lock.file_ = file;
  lock.fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock.fd_ < 0) throw Error("cannot open the lock file '" + file.string() + "': " + system_error_text(errno));
  if (::flock(lock.fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    if (error != EWOULDBLOCK) throw Error("cannot lock '" + file.string() + "': " + system_error_text(error));
    std::string holder(256, '\0');
    const auto got = ::pread(lock.fd_, holder.data(), holder.size(), 0);
    holder.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
    throw Error(what + " is in use by another job (" + (holder.empty() ? "holder unknown" : holder) +
                ", which holds the lock '" + file.string() +
                "'): two jobs saving into one project_dir overwrite and prune each other's checkpoints. Give this "
                "job its own project_dir, or end the other one");
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const auto who = "pid " + std::to_string(::getpid()) + " on host " + host + "\n";
  // Best effort: without the note, the next job's message says "holder unknown".
  if (::ftruncate(lock.fd_, 0) == 0) (void)!::pwrite(lock.fd_, who.data(), who.size(), 0);
  return lock;
}

ACC_DECL void save_optimizer(const torch::optim::Optimizer& optimizer, torch::serialize::OutputArchive& archive) {
  optimizer.save(archive);
  const auto& groups = optimizer.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    torch::serialize::OutputArchive options(archive.compilation_unit());
    groups[i].options().serialize(options);
    archive.write("acc/param_group_options/" + std::to_string(i), options);
  }
}

ACC_DECL void load_optimizer(torch::optim::Optimizer& optimizer, torch::serialize::InputArchive& archive) {
  optimizer.load(archive);
  auto& groups = optimizer.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    torch::serialize::InputArchive options;
    archive.read("acc/param_group_options/" + std::to_string(i), options);
    groups[i].options().serialize(options);
  }
}

ACC_DECL void check_optimizer_fits(const torch::optim::Optimizer& optimizer, torch::serialize::InputArchive& archive) {
  const auto fix = ": build the optimizer with the parameter groups of the run that saved it";
  torch::serialize::InputArchive groups;
  archive.read("param_groups", groups);
  at::Tensor count;
  groups.read("param_groups/size", count);
  const auto& here = optimizer.param_groups();
  if (count.item<int64_t>() != static_cast<int64_t>(here.size()))
    throw Error("the optimizer state holds " + std::to_string(count.item<int64_t>()) +
                " parameter group(s), and the prepared optimizer has " + std::to_string(here.size()) + fix);
  for (std::size_t g = 0; g < here.size(); ++g) {
    torch::serialize::InputArchive group;
    groups.read("param_groups/" + std::to_string(g), group);
    at::Tensor size;
    group.read("params/size", size);
    if (size.item<int64_t>() != static_cast<int64_t>(here[g].params().size()))
      throw Error("the optimizer state's parameter group " + std::to_string(g) + " holds " +
                  std::to_string(size.item<int64_t>()) + " parameter(s), and the prepared optimizer's has " +
                  std::to_string(here[g].params().size()) + fix);
  }
}

ACC_DECL void fail_save_at(std::string_view stage, int rank) {
  const char* wanted = std::getenv("ACC_TEST_FAIL_SAVE_AT");
  if (!wanted) return;
  std::string_view spec = wanted;
  constexpr std::string_view kill_suffix = ":kill";
  const bool kill = spec.size() > kill_suffix.size() && spec.substr(spec.size() - kill_suffix.size()) == kill_suffix;
  if (kill) spec.remove_suffix(kill_suffix.size());
  const auto at = spec.find('@');
  if (spec.substr(0, at) != stage) return;
  if (at != std::string_view::npos && spec.substr(at + 1) != std::to_string(rank)) return;
  if (kill) ::raise(SIGKILL);
  throw Error("ACC_TEST_FAIL_SAVE_AT=" + std::string(spec) + ": failing the save at stage '" + std::string(stage) +
              "'");
}

}  // namespace acc::detail
