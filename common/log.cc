#include "common/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>

namespace dst {

namespace {
std::atomic<int> threshold{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) {
  threshold = static_cast<int>(level);
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= threshold;
}

void Log(LogLevel level, const char* format, ...) {
  char line[2048];
  int n = std::snprintf(line, sizeof line, "dst-aggregator: %s: ", LevelName(level));
  va_list args;
  va_start(args, format);
  const int m = std::vsnprintf(line + n, sizeof line - n - 1, format, args);
  va_end(args);
  n = std::min<int>(n + std::max(m, 0), sizeof line - 2);
  line[n++] = '\n';
  // One write per line keeps lines from concurrent threads whole.
  [[maybe_unused]] ssize_t r = ::write(STDERR_FILENO, line, n);
}

}  // namespace dst
