// What save_state/load_state need beyond the file formats: torch archives written durably and
// read with errors that name the file, a scheduler's step count, and the test-only fault hook.
#pragma once

#include <acc/detail/files.hpp>
#include <acc/error.hpp>

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace acc::detail {

// Writes an archive and syncs it to disk; returns its size in bytes.
inline uint64_t save_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& file) {
  try {
    archive.save_to(file.string());
  } catch (const c10::Error& e) {
    throw Error("cannot write '" + file.string() + "': " + e.what_without_backtrace());
  }
  fsync_path(file);
  return std::filesystem::file_size(file);
}

inline torch::serialize::InputArchive load_archive(const std::filesystem::path& file,
                                                   std::optional<c10::Device> device = std::nullopt) {
  torch::serialize::InputArchive archive;
  try {
    if (device)
      archive.load_from(file.string(), *device);
    else
      archive.load_from(file.string());
  } catch (const c10::Error& e) {
    throw Error("'" + file.string() +
                "' is not a readable torch archive (truncated or corrupt?): " + e.what_without_backtrace());
  }
  return archive;
}

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

// An optimizer's state and its parameter groups' options (learning rate, betas, ...): libtorch's
// Optimizer::load restores the state but keeps the options the optimizer was built with, so they
// are written beside it, one nested archive per group, and read back into the groups.
inline void save_optimizer(const torch::optim::Optimizer& optimizer, torch::serialize::OutputArchive& archive) {
  optimizer.save(archive);
  const auto& groups = optimizer.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    torch::serialize::OutputArchive options(archive.compilation_unit());
    groups[i].options().serialize(options);
    archive.write("acc/param_group_options/" + std::to_string(i), options);
  }
}
inline void load_optimizer(torch::optim::Optimizer& optimizer, torch::serialize::InputArchive& archive) {
  optimizer.load(archive);
  auto& groups = optimizer.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    torch::serialize::InputArchive options;
    archive.read("acc/param_group_options/" + std::to_string(i), options);
    groups[i].options().serialize(options);
  }
}

// libtorch's LR schedulers keep their state in a protected step count and serialize nothing;
// a member pointer formed in a derived class reaches it on any scheduler.
struct SchedulerStepCount : torch::optim::LRScheduler {
  static auto& of(torch::optim::LRScheduler& scheduler) { return scheduler.*(&SchedulerStepCount::step_count_); }
};

// Test-only: ACC_TEST_FAIL_SAVE_AT=<stage> (or <stage>@<rank>) makes save_state fail at that
// stage, as a full disk would, to show that the previous checkpoint survives; with ":kill" at the
// end the process is SIGKILLed there instead, as a crash would end it.
inline void fail_save_at(std::string_view stage, int rank) {
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
