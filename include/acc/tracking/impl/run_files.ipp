#pragma once

#include <acc/detail/files.hpp>
#include <acc/error.hpp>
#include <acc/tracking/run_files.hpp>

#include <cerrno>
#include <chrono>
#include <string>
#include <system_error>

namespace acc::detail {

ACC_DECL std::filesystem::path create_run_directory(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw Error("cannot create the logging directory '" + dir.string() + "': " + ec.message() +
                "; set a writable ProjectConfiguration().logging_dir (or project_dir)");
  return dir;
}

ACC_DECL std::ofstream open_run_file(const std::filesystem::path& path, bool append) {
  std::ofstream file(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc | std::ios::out));
  if (!file) throw Error("cannot write '" + path.string() + "': " + system_error_text(errno));
  return file;
}

ACC_DECL void check_written(const std::ofstream& file, const std::filesystem::path& path) {
  if (!file) throw Error("cannot write '" + path.string() + "' (disk full or file removed?)");
}

ACC_DECL double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace acc::detail
