#include "common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/log.h"
#include "common/units.h"

namespace dst {

namespace {

constexpr auto kBarInterval = std::chrono::milliseconds(100);
constexpr int kBarWidth = 30;

// A negative rate is not known yet.
std::string Rate(double bytes_per_second) {
  if (bytes_per_second < 0) return "-";
  return FormatSize(static_cast<uint64_t>(bytes_per_second)) + "/s";
}

}  // namespace

Progress::Progress(std::string what, uint64_t total, bool terminal,
                   std::chrono::milliseconds interval)
    : what_(std::move(what)),
      total_(total),
      terminal_(terminal),
      interval_(interval),
      started_(Clock::now()),
      last_shown_(started_) {}

bool Progress::StderrIsTerminal() {
  return ::isatty(STDERR_FILENO) == 1 && !LogIsJson();
}

std::string Progress::Line(const std::string& what, uint64_t done, uint64_t total, double seconds) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : -1;
  return LineAtRate(what, done, total, rate);
}

std::string Progress::LineAtRate(const std::string& what, uint64_t done, uint64_t total,
                                 double bytes_per_second) {
  const uint64_t percent = total ? std::min<uint64_t>(100, done * 100 / total) : 100;
  std::string line = what + ": " + std::to_string(percent) + "% (" + FormatSize(done) + " of " +
                     FormatSize(total) + ") at " + Rate(bytes_per_second);
  if (done > 0 && done < total && bytes_per_second > 0) {
    const double eta = static_cast<double>(total - done) / bytes_per_second;
    line += ", ETA " + std::to_string(static_cast<uint64_t>(eta + 0.5)) + " s";
  }
  return line;
}

void Progress::Update(uint64_t done) {
  done_ = done;
  const Clock::time_point now = Clock::now();
  if (now - last_shown_ < (terminal_ ? kBarInterval : interval_)) return;
  last_shown_ = now;
  shown_ = true;
  const double seconds = std::chrono::duration<double>(now - started_).count();
  if (!terminal_) {
    LOG_INFO("%s", Line(what_, done, total_, seconds).c_str());
    return;
  }
  const int filled = total_ ? static_cast<int>(kBarWidth * std::min(done, total_) / total_) : 0;
  const std::string bar = "[" + std::string(filled, '#') + std::string(kBarWidth - filled, ' ') +
                          "] " + Line(what_, done, total_, seconds);
  std::fprintf(stderr, "\r%s\033[K", bar.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::Clear() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

void Progress::Finish() {
  const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
  Clear();
  if (!shown_) return;
  char text[64];
  std::snprintf(text, sizeof text, "%.1f", seconds);
  LOG_INFO("%s: %s in %s s (%s)", what_.c_str(), FormatSize(done_).c_str(), text,
           Rate(seconds > 0 ? static_cast<double>(done_) / seconds : -1).c_str());
}

}  // namespace dst
