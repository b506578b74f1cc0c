#include "common/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace dst {

namespace {
std::atomic<int> threshold{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> json_format{false};

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
// "2026-11-21T08:00:00.123Z"
std::string UtcNow() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  ::gmtime_r(&now.tv_sec, &utc);
  char text[40];
  const size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + n, sizeof text - n, ".%03ldZ", now.tv_nsec / 1000000);
  return text;
}

void AppendJsonString(std::string& out, std::string_view text) {
  out += '"';
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

}  // namespace

void SetLogFormat(LogFormat format) {
  json_format = format == LogFormat::kJson;
}

bool LogIsJson() {
  return json_format;
}

void SetLogLevel(LogLevel level) {
  threshold = static_cast<int>(level);
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= threshold;
}

void Log(LogLevel level, const char* format, ...) {
  char message[2048];
  va_list args;
  va_start(args, format);
  const int m = std::vsnprintf(message, sizeof message, format, args);
  va_end(args);
  const size_t length = std::min<size_t>(std::max(m, 0), sizeof message - 1);
  std::string line;
  line.reserve(length + 96);
  if (json_format) {
    line = "{\"time\":\"" + UtcNow() + "\",\"level\":\"" + LevelName(level) + "\",\"message\":";
    AppendJsonString(line, {message, length});
    line += "}\n";
  } else {
    line = std::string("dst-aggregator: ") + LevelName(level) + ": ";
    line.append(message, length);
    line += '\n';
  }
  // One write per line keeps lines from concurrent threads whole.
  [[maybe_unused]] ssize_t r = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace dst
