// acc::ProgressBar: a tqdm-like progress line for training loops, on the main process only,
//
//   train:  45%|###########              | 45/100 [00:12<00:15, 3.61it/s, loss=2.31]
//
// with the rate, the time left and metrics after it (set_postfix). Shown by default only where
// its stream (stderr, as tqdm) is a terminal, redrawn in place and at most every min_interval
// seconds; display(always) writes it anyway (one line per redraw where the stream is not a
// terminal), display(never) never.
//
//   acc::ProgressBar bar(acc::ProgressBarOptions(max_steps).description("train"));
//   for (...) { ...; bar.set_postfix({{"loss", loss}}); bar.update(); }
#pragma once

#include <acc/config/environment.hpp>
#include <acc/tracking/value.hpp>

#include <torch/arg.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iostream>
#include <ostream>
#include <string>
#include <utility>
#include <variant>

namespace acc {

class ProgressBarOptions {
 public:
  enum class Display { automatic, always, never };

  ProgressBarOptions(int64_t total = 0) : total_(total) {}  // NOLINT: ProgressBarOptions(100) reads well

  // Steps in all; 0 when unknown (no bar, no time left).
  TORCH_ARG(int64_t, total);
  TORCH_ARG(std::string, description) = "";
  TORCH_ARG(std::string, unit) = "it";
  // Characters of the bar itself.
  TORCH_ARG(int, bar_width) = 25;
  // Least seconds between two redraws (the last one is always drawn).
  TORCH_ARG(double, min_interval) = 0.1;
  // automatic: only where the stream is a terminal.
  TORCH_ARG(Display, display) = Display::automatic;
  // Whether this process shows it: by default only the main process (rank 0) does.
  TORCH_ARG(bool, enabled) = ProcessEnvironment::from_environment().is_main_process();
  using StreamPointer = std::ostream*;  // TORCH_ARG writes `const T&`, which a bare pointer type breaks
  TORCH_ARG(StreamPointer, stream) = &std::cerr;
  // Seconds on a monotonic clock (tests inject their own).
  TORCH_ARG(std::function<double()>, clock) = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
};

namespace detail {
// mm:ss, or h:mm:ss from an hour on.
inline std::string clock_text(double seconds) {
  const auto total = static_cast<int64_t>(std::max(0.0, seconds));
  char text[32];
  if (total >= 3600)
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  else
    std::snprintf(text, sizeof text, "%02lld:%02lld", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  return text;
}

inline bool is_terminal(const std::ostream* stream) {
  if (stream == &std::cerr || stream == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  if (stream == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  return false;
}
}  // namespace detail

class ProgressBar {
 public:
  explicit ProgressBar(ProgressBarOptions options = {})
      : options_(std::move(options)),
        shown_(options_.enabled() && options_.display() != ProgressBarOptions::Display::never &&
               (options_.display() == ProgressBarOptions::Display::always || detail::is_terminal(options_.stream()))),
        in_place_(detail::is_terminal(options_.stream())),
        start_(options_.clock()()),
        last_draw_(start_) {}
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() {
    try {
      close();
    } catch (...) {  // a destructor must not throw; the stream's state is the user's to check
    }
  }

  // Advances by `steps`; redraws if min_interval has passed, or at the total.
  void update(int64_t steps = 1) {
    count_ += steps;
    const double now = options_.clock()();
    if (now - last_draw_ >= options_.min_interval() || (options_.total() > 0 && count_ >= options_.total())) draw(now);
  }
  // Metrics shown after the rate, replaced at each call; drawn with the next update.
  void set_postfix(TrackedValues values) { postfix_ = std::move(values); }
  void set_description(std::string description) { options_.description(std::move(description)); }

  // Draws the final state and ends the line; later calls do nothing.
  void close() {
    if (closed_) return;
    closed_ = true;
    if (!shown_) return;
    draw(options_.clock()());
    if (in_place_) *options_.stream() << "\n" << std::flush;
  }

  int64_t count() const { return count_; }
  bool shown() const { return shown_; }

  // The line as it would be drawn at time `now` (the clock's seconds).
  std::string line(double now) const {
    const double elapsed = now - start_;
    const double rate = elapsed > 0 && count_ > 0 ? static_cast<double>(count_) / elapsed : 0.0;
    const auto& unit = options_.unit();
    std::string text = options_.description().empty() ? "" : options_.description() + ": ";
    if (options_.total() > 0) {
      const double fraction = std::clamp(static_cast<double>(count_) / static_cast<double>(options_.total()), 0.0, 1.0);
      const int filled = static_cast<int>(fraction * options_.bar_width());
      char percent[8];
      std::snprintf(percent, sizeof percent, "%3d%%", static_cast<int>(fraction * 100));
      text += std::string(percent) + "|" + std::string(static_cast<std::size_t>(filled), '#') +
              std::string(static_cast<std::size_t>(options_.bar_width() - filled), ' ') + "| " +
              std::to_string(count_) + "/" + std::to_string(options_.total()) + " [" + detail::clock_text(elapsed) +
              "<" + (rate > 0 ? detail::clock_text(static_cast<double>(options_.total() - count_) / rate) : "?");
    } else {
      text += std::to_string(count_) + unit + " [" + detail::clock_text(elapsed);
    }
    char speed[48];
    if (rate <= 0)
      std::snprintf(speed, sizeof speed, "?%s/s", unit.c_str());
    else if (rate < 1)
      std::snprintf(speed, sizeof speed, "%.2fs/%s", 1 / rate, unit.c_str());
    else
      std::snprintf(speed, sizeof speed, "%.2f%s/s", rate, unit.c_str());
    text += ", " + std::string(speed);
    for (const auto& [key, value] : postfix_) text += ", " + key + "=" + postfix_text(value);
    return text + "]";
  }

 private:
  // Numbers with 4 significant digits, as a glance needs.
  static std::string postfix_text(const TrackedValue& value) {
    if (!std::holds_alternative<double>(value.storage())) return value.text();
    char digits[32];
    std::snprintf(digits, sizeof digits, "%.4g", value.number());
    return digits;
  }

  void draw(double now) {
    last_draw_ = now;
    if (!shown_) return;
    auto text = line(now);
    auto& out = *options_.stream();
    if (in_place_) {
      const auto width = text.size();
      text.resize(std::max(width, drawn_width_), ' ');  // blanks what a longer line left
      drawn_width_ = width;
      out << "\r" << text << std::flush;
    } else {
      out << text << "\n" << std::flush;
    }
  }

  ProgressBarOptions options_;
  bool shown_;
  bool in_place_;
  double start_;
  double last_draw_;
  int64_t count_ = 0;
  TrackedValues postfix_;
  std::size_t drawn_width_ = 0;
  bool closed_ = false;
};

}  // namespace acc
