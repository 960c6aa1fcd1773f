#pragma once

#include <acc/error.hpp>
#include <acc/profiling/key_averages.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>

namespace acc::detail {

inline bool on_cpu(const ProfiledEvent& event) {
  return event.kind == ProfiledEvent::Kind::op || event.kind == ProfiledEvent::Kind::user_annotation;
}

// Each CPU event's time less that of the events directly inside it on its thread (0 for others).
ACC_DECL std::vector<int64_t> self_times_ns(const std::vector<ProfiledEvent>& events) {
  std::vector<int64_t> self(events.size(), 0);
  std::vector<size_t> order;
  for (size_t i = 0; i < events.size(); ++i)
    if (on_cpu(events[i])) {
      self[i] = events[i].duration_ns;
      order.push_back(i);
    }
  // An outer event starts first, or at the same time and lasts longer.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto &x = events[a], &y = events[b];
    if (x.thread != y.thread) return x.thread < y.thread;
    if (x.start_ns != y.start_ns) return x.start_ns < y.start_ns;
    return x.duration_ns > y.duration_ns;
  });
  std::vector<size_t> open;  // the events that enclose the current one, innermost last
  for (const auto i : order) {
    if (!open.empty() && events[open.back()].thread != events[i].thread) open.clear();
    while (!open.empty() && events[open.back()].start_ns + events[open.back()].duration_ns <= events[i].start_ns)
      open.pop_back();
    if (!open.empty()) self[open.back()] -= events[i].duration_ns;
    open.push_back(i);
  }
  for (auto& time : self) time = std::max<int64_t>(time, 0);
  return self;
}

// torch's _format_time: 1.234us, 1.234ms, 1.234s.
ACC_DECL std::string profile_time(int64_t ns) {
  const double us = static_cast<double>(ns) / 1e3;
  char text[32];
  if (us >= 1e6)
    std::snprintf(text, sizeof text, "%.3fs", us / 1e6);
  else if (us >= 1e3)
    std::snprintf(text, sizeof text, "%.3fms", us / 1e3);
  else
    std::snprintf(text, sizeof text, "%.3fus", us);
  return text;
}

ACC_DECL std::string profile_percent(int64_t part, int64_t whole) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f%%", whole > 0 ? 100.0 * static_cast<double>(part) / whole : 0.0);
  return text;
}

}  // namespace acc::detail

namespace acc {

ACC_DECL KeyAverages::KeyAverages(const std::vector<ProfiledEvent>& events) {
  const auto self = detail::self_times_ns(events);
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& event = events[i];
    if (event.kind == ProfiledEvent::Kind::memory) continue;
    const auto key = event.name.rfind("ProfilerStep#", 0) == 0 ? std::string("ProfilerStep*") : event.name;
    auto row = std::find_if(rows_.begin(), rows_.end(), [&](const KeyAverage& r) { return r.key == key; });
    if (row == rows_.end()) {
      rows_.push_back(KeyAverage{key});
      row = rows_.end() - 1;
    }
    ++row->count;
    row->flops += event.flops;
    if (event.kind == ProfiledEvent::Kind::kernel) {
      row->self_cuda_time_total_ns += event.duration_ns;
    } else {
      row->self_cpu_time_total_ns += self[i];
      row->cpu_time_total_ns += event.duration_ns;
    }
  }
}

ACC_DECL const KeyAverage* KeyAverages::find(std::string_view key) const {
  const auto row = std::find_if(rows_.begin(), rows_.end(), [&](const KeyAverage& r) { return r.key == key; });
  return row == rows_.end() ? nullptr : &*row;
}

ACC_DECL std::string KeyAverages::table(std::string_view sort_by, int64_t row_limit) const {
  using Measure = int64_t (*)(const KeyAverage&);
  Measure measure = nullptr;
  if (sort_by == "self_cpu_time_total")
    measure = [](const KeyAverage& r) { return r.self_cpu_time_total_ns; };
  else if (sort_by == "cpu_time_total")
    measure = [](const KeyAverage& r) { return r.cpu_time_total_ns; };
  else if (sort_by == "self_cuda_time_total")
    measure = [](const KeyAverage& r) { return r.self_cuda_time_total_ns; };
  else if (sort_by == "count")
    measure = [](const KeyAverage& r) { return r.count; };
  else
    throw Error("key_averages().table() cannot sort by \"" + std::string(sort_by) +
                "\": use self_cpu_time_total, cpu_time_total, self_cuda_time_total or count");
  auto rows = rows_;
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const KeyAverage& a, const KeyAverage& b) { return measure(a) > measure(b); });
  if (row_limit >= 0 && static_cast<size_t>(row_limit) < rows.size()) rows.resize(static_cast<size_t>(row_limit));

  const auto sum = [&](Measure m) {
    return std::accumulate(rows_.begin(), rows_.end(), int64_t{0},
                           [&](int64_t total, const KeyAverage& r) { return total + m(r); });
  };
  const int64_t self_cpu_total = sum([](const KeyAverage& r) { return r.self_cpu_time_total_ns; });
  const int64_t self_cuda_total = sum([](const KeyAverage& r) { return r.self_cuda_time_total_ns; });
  const bool with_cuda = self_cuda_total > 0;
  const bool with_flops = std::any_of(rows_.begin(), rows_.end(), [](const KeyAverage& r) { return r.flops > 0; });

  constexpr size_t max_name = 55, column = 12;
  size_t name_width = 4;
  for (const auto& r : rows) name_width = std::max(name_width, std::min(r.key.size(), max_name));
  std::vector<std::string> header{"Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"};
  if (with_cuda) header.insert(header.end(), {"Self CUDA", "Self CUDA %"});
  if (with_flops) header.push_back("Total MFLOPs");
  header.push_back("# of Calls");

  std::string text;
  const auto line = [&] {
    text += std::string(name_width, '-');
    for (size_t i = 0; i < header.size(); ++i) text += "  " + std::string(column, '-');
    text += '\n';
  };
  const auto cells = [&](const std::string& name, const std::vector<std::string>& values) {
    text += name + std::string(name_width - name.size(), ' ');
    for (const auto& value : values) text += "  " + std::string(column - std::min(column, value.size()), ' ') + value;
    text += '\n';
  };
  line();
  cells("Name", header);
  line();
  for (const auto& r : rows) {
    const auto name = r.key.size() > max_name ? r.key.substr(0, max_name - 3) + "..." : r.key;
    std::vector<std::string> values{detail::profile_percent(r.self_cpu_time_total_ns, self_cpu_total),
                                    detail::profile_time(r.self_cpu_time_total_ns),
                                    detail::profile_percent(r.cpu_time_total_ns, self_cpu_total),
                                    detail::profile_time(r.cpu_time_total_ns),
                                    detail::profile_time(r.count > 0 ? r.cpu_time_total_ns / r.count : 0)};
    if (with_cuda)
      values.insert(values.end(), {detail::profile_time(r.self_cuda_time_total_ns),
                                   detail::profile_percent(r.self_cuda_time_total_ns, self_cuda_total)});
    if (with_flops) {
      char mflops[32];
      std::snprintf(mflops, sizeof mflops, "%.3f", static_cast<double>(r.flops) / 1e6);
      values.push_back(mflops);
    }
    values.push_back(std::to_string(r.count));
    cells(name, values);
  }
  line();
  text += "Self CPU time total: " + detail::profile_time(self_cpu_total) + "\n";
  if (with_cuda) text += "Self CUDA time total: " + detail::profile_time(self_cuda_total) + "\n";
  return text;
}

}  // namespace acc
