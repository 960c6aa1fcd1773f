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
#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <torch/arg.h>

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

ACC_DECL std::string_view log_level_name(LogLevel level);

// A level by name, in any case ("info", "INFO"); `source` names where it came from, for the message.
ACC_DECL LogLevel parse_log_level(std::string_view name, std::string_view source = "the log level");

// The process's ACCELERATE_LOG_LEVEL, else WARNING.
inline LogLevel log_level_of(const ProcessEnvironment& env) {
  return env.log_level ? parse_log_level(*env.log_level, "ACCELERATE_LOG_LEVEL") : LogLevel::warning;
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
  // Unset: ACCELERATE_LOG_LEVEL, else WARNING.
  TORCH_ARG(std::optional<LogLevel>, level) = std::nullopt;
  using StreamPointer = std::ostream*;  // TORCH_ARG writes `const T&`, which a bare pointer type breaks
  TORCH_ARG(StreamPointer, stream) = &std::cerr;
  // Unset: this process's, read when the logger is made (options are plain values).
  TORCH_ARG(std::optional<ProcessEnvironment>, environment) = std::nullopt;
  // What makes the processes wait for each other (the accelerator's wait_for_everyone), for in_order.
  TORCH_ARG(std::function<void()>, barrier) = nullptr;
};

class Logger {
 public:
  Logger(std::string name, LoggerOptions options)
      : name_(std::move(name)),
        options_(std::move(options)),
        environment_(options_.environment() ? *options_.environment() : ProcessEnvironment::from_environment()),
        level_(options_.level() ? *options_.level() : log_level_of(environment_)) {}

  const std::string& name() const { return name_; }
  LogLevel level() const { return level_; }
  void set_level(LogLevel level) { level_ = level; }
  bool enabled_for(LogLevel level) const { return static_cast<int>(level) >= static_cast<int>(level_); }

  // Writes "LEVEL name: message" (with "[rank r] " first where every process writes) as one
  // line, so that lines of different processes do not interleave within a line.
  void log(LogLevel level, std::string_view message, const LogOptions& how = {}) const;
  void debug(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::debug, message, how); }
  void info(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::info, message, how); }
  void warning(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::warning, message, how); }
  void error(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::error, message, how); }
  void critical(std::string_view message, const LogOptions& how = {}) const { log(LogLevel::critical, message, how); }

 private:
  void write(LogLevel level, std::string_view message, bool with_rank) const;

  std::string name_;
  LoggerOptions options_;
  ProcessEnvironment environment_;
  LogLevel level_;
};

// A logger for this process as the launcher's variables describe it.
ACC_DECL Logger get_logger(std::string name, LoggerOptions options = {});

// A logger for the accelerator's processes; in_order messages wait on its wait_for_everyone.
template <class Accelerator>
Logger get_logger(std::string name, Accelerator& accelerator, LoggerOptions options = {}) {
  options.environment(accelerator.environment()).barrier([&accelerator] { accelerator.wait_for_everyone(); });
  return Logger(std::move(name), std::move(options));
}

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/logger.ipp>
#endif
