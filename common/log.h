// Logging: one line per event on stderr, "LEVEL: message", printf-style.
// Thread-safe (one write(2) per line). The level threshold is process-wide,
// set once at start-up.
#pragma once

namespace dst {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
// kText: "dst-aggregator: LEVEL: message". kJson: one JSON object a line,
// {"time":"2026-11-21T08:00:00.123Z","level":"info","message":"..."}, for log
// collectors. Process-wide, set once at start-up.
enum class LogFormat { kText, kJson };
void SetLogFormat(LogFormat format);
bool LogIsJson();
bool LogEnabled(LogLevel level);
void Log(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace dst

#define DST_LOG(level, ...)                            \
  do {                                                 \
    if (::dst::LogEnabled(::dst::LogLevel::level))     \
      ::dst::Log(::dst::LogLevel::level, __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(...) DST_LOG(kDebug, __VA_ARGS__)
#define LOG_INFO(...) DST_LOG(kInfo, __VA_ARGS__)
#define LOG_WARNING(...) DST_LOG(kWarning, __VA_ARGS__)
#define LOG_ERROR(...) DST_LOG(kError, __VA_ARGS__)
