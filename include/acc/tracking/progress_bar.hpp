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
#include <acc/detail/linkage.hpp>
#include <acc/tracking/value.hpp>

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

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
  // Whether this process shows it; unset: only the main process (rank 0, read from the launcher's
  // variables when the bar is made) does.
  TORCH_ARG(std::optional<bool>, enabled) = std::nullopt;
  using StreamPointer = std::ostream*;  // TORCH_ARG writes `const T&`, which a bare pointer type breaks
  TORCH_ARG(StreamPointer, stream) = &std::cerr;
  // Seconds on a monotonic clock (tests inject their own).
  TORCH_ARG(std::function<double()>, clock) = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
};

namespace detail {
// mm:ss, or h:mm:ss from an hour on.
ACC_DECL std::string clock_text(double seconds);
ACC_DECL bool is_terminal(const std::ostream* stream);
}  // namespace detail

class ProgressBar {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar();

  // Advances by `steps`; redraws if min_interval has passed, or at the total.
  void update(int64_t steps = 1);
  // Metrics shown after the rate, replaced at each call; drawn with the next update.
  void set_postfix(TrackedValues values) { postfix_ = std::move(values); }
  void set_description(std::string description) { options_.description(std::move(description)); }

  // Draws the final state and ends the line; later calls do nothing.
  void close();

  int64_t count() const { return count_; }
  bool shown() const { return shown_; }

  // The line as it would be drawn at time `now` (the clock's seconds).
  std::string line(double now) const;

 private:
  // Numbers with 4 significant digits, as a glance needs.
  static std::string postfix_text(const TrackedValue& value);
  void draw(double now);

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

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/progress_bar.ipp>
#endif
