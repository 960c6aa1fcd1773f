// acc::get_logger: a logger that knows the process's rank (Python Accelerate's get_logger and
// MultiProcessAdapter). By default a message is written on the main process only; with
// LogOptions().main_process_only(false) every process writes it, prefixed with its rank, and adding
// .in_order(true) the processes take turns, rank 0 first (a barrier per rank: for rare messages).
// The threshold comes from ACCELERATE_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR, CRITICAL; default
// WARNING, as Python's), unless given.
//
//   auto logger = acc::get_logger("train", accelerator);
//   logger.info("epoch " + std::to_string(epoch));
//   logger.warning("shard " + path + " missing", acc::LogOptions().main_process_only(false));
#pragma once

#include <acc/config/environment.hpp>
#include <acc/error.hpp>

#include <torch/arg.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace acc {

// Python's logging levels, with their numbers.
enum class LogLevel { debug = 10, info = 20, warning = 30, error = 40, critical = 50 };

inline std::string_view log_level_name(LogLevel level) {
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

// A level by name, in any case ("info", "INFO"); `source` names where it came from, for the message.
inline LogLevel parse_log_level(std::string_view name, std::string_view source = "the log level") {
  std::string upper(name);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "WARN") upper = "WARNING";
  for (auto level : {LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error, LogLevel::critical})
    if (upper == log_level_name(level)) return level;
  throw Error(std::string(source) + " is '" + std::string(name) +
              "'; allowed values: DEBUG, INFO, WARNING, ERROR, CRITICAL");
}

// ACCELERATE_LOG_LEVEL, else WARNING.
inline LogLevel log_level_from_environment() {
  const char* value = std::getenv("ACCELERATE_LOG_LEVEL");
  return value && *value ? parse_log_level(value, "ACCELERATE_LOG_LEVEL") : LogLevel::warning;
}

// How one message is written.
class LogOptions {
 public:
  TORCH_ARG(bool, main_process_only) = true;
  // With main_process_only(false): the processes write in turn, by rank (needs a logger made with
  // the accelerator; every process must make the call).
  TORCH_ARG(bool, in_order) = false;
};

class LoggerOptions {
 public:
  TORCH_ARG(LogLevel, level) = log_level_from_environment();
  using StreamPointer = std::ostream*;  // TORCH_ARG writes `const T&`, which a bare pointer type breaks
  TORCH_ARG(StreamPointer, stream) = &std::cerr;
  TORCH_ARG(ProcessEnvironment, environment) = ProcessEnvironment::from_environment();
  // What makes the processes wait for each other (the accelerator's wait_for_everyone), for in_order.
  TORCH_ARG(std::function<void()>, barrier) = nullptr;
};

class Logger {
 public:
  Logger(std::string name, LoggerOptions options) : name_(std::move(name)), options_(std::move(options)) {}

  const std::string& name() const { return name_; }
  LogLevel level() const { return options_.level(); }
  void set_level(LogLevel level) { options_.level(level); }
  bool enabled_for(LogLevel level) const { return static_cast<int>(level) >= static_cast<int>(options_.level()); }

  // Writes "LEVEL name: message" (with "[rank r] " first where every process writes) as one
  // line, so that lines of different processes do not interleave within a line.
  void log(LogLevel level, std::string_view message, const LogOptions& how = {}) const {
    const auto& env = options_.environment();
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
  void debug(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::debug, message, how); }
  void info(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::info, message, how); }
  void warning(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::warning, message, how); }
  void error(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::error, message, how); }
  void critical(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::critical, message, how); }

 private:
  void write(LogLevel level, std::string_view message, bool with_rank) const {
    if (!enabled_for(level)) return;
    std::string line = with_rank ? "[rank " + std::to_string(options_.environment().rank) + "] " : "";
    line += std::string(log_level_name(level)) + " " + name_ + ": " + std::string(message) + "\n";
    *options_.stream() << line << std::flush;
  }

  std::string name_;
  LoggerOptions options_;
};

// A logger for this process as the launcher's variables describe it.
inline Logger get_logger(std::string name, LoggerOptions options = {}) {
  return Logger(std::move(name), std::move(options));
}

// A logger for the accelerator's processes; in_order messages wait on its wait_for_everyone.
template <class Accelerator>
Logger get_logger(std::string name, Accelerator& accelerator, LoggerOptions options = {}) {
  options.environment(accelerator.environment()).barrier([&accelerator] { accelerator.wait_for_everyone(); });
  return Logger(std::move(name), std::move(options));
}

}  // namespace acc
