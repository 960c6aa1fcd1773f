// What save_state/load_state need beyond the file formats: torch archives written durably (a
// write that fails is an acc::Error, never libtorch's abort) and read back checked against the
// size and CRC-32C the manifest recorded, the temporary directories of saves that were killed, a
// scheduler's step count, and the test-only fault hook.
#pragma once

#include <acc/checkpoint/metadata.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace acc::detail {

// Writes an archive and syncs it to disk; returns its size and CRC-32C. libtorch's archive writer
// never sees a failed write: after one it would throw again from its destructor (libtorch 1.13),
// which ends the process, so the failure is kept and thrown once the archive is done.
ACC_DECL CheckpointFile save_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& file);

// Throws DamagedCheckpoint when `file`'s bytes (`size` of them, with CRC-32C `crc`) are not those
// the manifest recorded.
ACC_DECL void check_recorded(const std::filesystem::path& file, const CheckpointFile& recorded, uint64_t size,
                             uint32_t crc);

// Throws DamagedCheckpoint when `file`'s size or CRC-32C (read a piece at a time) differ from its record.
ACC_DECL void check_file(const std::filesystem::path& file, const CheckpointFile& recorded);

// Reads an archive, its bytes checked against its manifest record first when there is one.
ACC_DECL torch::serialize::InputArchive load_archive(const std::filesystem::path& file,
                                                     const std::optional<CheckpointFile>& recorded = std::nullopt,
                                                     std::optional<c10::Device> device = std::nullopt);

// Where a save of `target` by process `pid` stages its files before they are renamed into place.
ACC_DECL std::filesystem::path staging_path(const std::filesystem::path& target, int64_t pid);

// Removes what saves of `target` that were killed left beside it: `<target>.tmp-<pid>` (and the
// `.old` directory of a replacement that could not exchange) of processes that no longer run
// here. Saves into one place are serialized (one main process; the project_dir lock), so a
// staging directory of a process that is gone belongs to no save in progress. An `.old` one
// where `target` is missing goes back to `target` instead: that save was killed between its renames.
ACC_DECL void remove_stale_staging(const std::filesystem::path& target);

// Runs fn (which reads an archive into an object), naming the file in any error.
template <class Fn>
void read_from(const std::filesystem::path& file, Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    throw Error("'" + file.string() + "' does not fit: " + e.what_without_backtrace());
  } catch (const Error& e) {
    throw Error("'" + file.string() + "': " + e.what());
  }
}

// Why the checkpoint in `dir` is damaged, or "" when its manifest reads and every file it lists
// has the size and CRC-32C recorded. Reads each file once, a piece at a time.
ACC_DECL std::string damage_of(const std::filesystem::path& dir);

// An exclusive lock on a file (flock), held while this object lives and released by the kernel when
// the process ends however it ends. The file says who holds it, for the message of the next one
// who tries.
class FileLock {
 public:
  FileLock() = default;
  FileLock(FileLock&& other) noexcept : file_(std::move(other.file_)), fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&& other) noexcept {
    std::swap(file_, other.file_);
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~FileLock();

  // Takes the lock on `file` (created with its directory) for `what`, or throws naming the holder.
  static FileLock take(const std::filesystem::path& file, const std::string& what);

  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
  int fd_ = -1;
};

// An optimizer's state and its parameter groups' options (learning rate, betas, ...): libtorch's
// Optimizer::load restores the state but keeps the options the optimizer was built with, so they
// are written beside it, one nested archive per group, and read back into the groups.
ACC_DECL void save_optimizer(const torch::optim::Optimizer& optimizer, torch::serialize::OutputArchive& archive);

ACC_DECL void load_optimizer(torch::optim::Optimizer& optimizer, torch::serialize::InputArchive& archive);
// Throws an acc::Error when the archive's parameter groups are not the optimizer's (their number,
// or a group's number of parameters): libtorch's Optimizer::load finds it only group by group, as
// it assigns them, after the model's weights were loaded.
ACC_DECL void check_optimizer_fits(const torch::optim::Optimizer& optimizer, torch::serialize::InputArchive& archive);

// libtorch's LR schedulers keep their state in a protected step count and serialize nothing;
// a member pointer formed in a derived class reaches it on any scheduler.
struct SchedulerStepCount : torch::optim::LRScheduler {
  static auto& of(torch::optim::LRScheduler& scheduler) { return scheduler.*(&SchedulerStepCount::step_count_); }
};

// Test-only: ACC_TEST_FAIL_SAVE_AT=<stage> (or <stage>@<rank>) makes save_state fail at that
// stage, as a full disk would, to show that the previous checkpoint survives; with ":kill" at the
// end the process is SIGKILLed there instead, as a crash would end it.
ACC_DECL void fail_save_at(std::string_view stage, int rank);

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/checkpoint_io.ipp>
#endif
