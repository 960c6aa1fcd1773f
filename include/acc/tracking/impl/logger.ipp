#pragma once

#include <acc/error.hpp>
#include <acc/tracking/logger.hpp>

#include <cctype>
#include <string>
#include <utility>

namespace acc {

ACC_DECL std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "DEBUG";
    case LogLevel::info:
      return "INFO";
    case LogLevel::warning:
      return "WARNING";
    case LogLevel::error:
      return "ERROR";
    case LogLevel::critical:
      return "CRITICAL";
  }
  return "UNKNOWN";
}

ACC_DECL LogLevel parse_log_level(std::string_view name, std::string_view source) {
  std::string upper(name);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "WARN") upper = "WARNING";
  for (auto level : {LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error, LogLevel::critical})
    if (upper == log_level_name(level)) return level;
  throw Error(std::string(source) + " is '" + std::string(name) +
              "'; allowed values: DEBUG, INFO, WARNING, ERROR, CRITICAL");
}

ACC_DECL void Logger::log(LogLevel level, std::string_view message, const LogOptions& how) const {
  const auto& env = environment_;
  if (how.in_order() && !how.main_process_only()) {
    if (!options_.barrier())
      throw Error("logger '" + name_ +
                  "': in_order needs the processes to take turns; get the logger with "
                  "acc::get_logger(name, accelerator)");
    for (int rank = 0; rank < env.world_size; ++rank) {
      if (rank == env.rank) write(level, message, true);
      options_.barrier()();
    }
    return;
  }
  if (how.main_process_only() && !env.is_main_process()) return;
  write(level, message, !how.main_process_only());
}

ACC_DECL void Logger::write(LogLevel level, std::string_view message, bool with_rank) const {
  if (!enabled_for(level)) return;
  std::string line = with_rank ? "[rank " + std::to_string(environment_.rank) + "] " : "";
  line += std::string(log_level_name(level)) + " " + name_ + ": " + std::string(message) + "\n";
  *options_.stream() << line << std::flush;
}

ACC_DECL Logger get_logger(std::string name, LoggerOptions options) {
  return Logger(std::move(name), std::move(options));
}

}  // namespace acc
