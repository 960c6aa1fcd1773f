#pragma once

#include <acc/tracking/progress_bar.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <variant>

namespace acc {

namespace detail {
ACC_DECL std::string clock_text(double seconds) {
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

ACC_DECL bool is_terminal(const std::ostream* stream) {
  if (stream == &std::cerr || stream == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  if (stream == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  return false;
}
}  // namespace detail

ACC_DECL ProgressBar::ProgressBar(ProgressBarOptions options)
    : options_(std::move(options)),
      shown_((options_.enabled() ? *options_.enabled() : ProcessEnvironment::from_environment().is_main_process()) &&
             options_.display() != ProgressBarOptions::Display::never &&
             (options_.display() == ProgressBarOptions::Display::always || detail::is_terminal(options_.stream()))),
      in_place_(detail::is_terminal(options_.stream())),
      start_(options_.clock()()),
      last_draw_(start_) {}

ACC_DECL ProgressBar::~ProgressBar() {
  try {
    close();
  } catch (...) {  // a destructor must not throw; the stream's state is the user's to check
  }
}

ACC_DECL void ProgressBar::update(int64_t steps) {
  count_ += steps;
  const double now = options_.clock()();
  if (now - last_draw_ >= options_.min_interval() || (options_.total() > 0 && count_ >= options_.total())) draw(now);
}

ACC_DECL void ProgressBar::close() {
  if (closed_) return;
  closed_ = true;
  if (!shown_) return;
  draw(options_.clock()());
  if (in_place_) *options_.stream() << "\n" << std::flush;
}

ACC_DECL std::string ProgressBar::line(double now) const {
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
            std::string(static_cast<std::size_t>(options_.bar_width() - filled), ' ') + "| " + std::to_string(count_) +
            "/" + std::to_string(options_.total()) + " [" + detail::clock_text(elapsed) + "<" +
            (rate > 0 ? detail::clock_text(static_cast<double>(options_.total() - count_) / rate) : "?");
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

ACC_DECL std::string ProgressBar::postfix_text(const TrackedValue& value) {
  if (!std::holds_alternative<double>(value.storage())) return value.text();
  char digits[32];
  std::snprintf(digits, sizeof digits, "%.4g", value.number());
  return digits;
}

ACC_DECL void ProgressBar::draw(double now) {
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

}  // namespace acc
