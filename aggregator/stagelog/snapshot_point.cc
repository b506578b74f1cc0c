#include "aggregator/stagelog/snapshot_point.h"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace dst::stagelog {

namespace {

constexpr uint64_t kNanosPerSecond = 1000000000;

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// Exactly `n` digits at `at`.
bool Digits(std::string_view s, size_t at, size_t n, int* out) {
  if (at + n > s.size() || !AllDigits(s.substr(at, n))) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i)
    v = v * 10 + (s[at + i] - '0');
  *out = v;
  return true;
}

Status BadPoint(std::string_view text) {
  return Status::Invalid("snapshot point '" + std::string(text) +
                         "' is neither a sequence number nor a UTC time such as "
                         "2026-12-03T15:00:00Z");
}

}  // namespace

Status ParseSnapshotPoint(std::string_view text, SnapshotPoint* out) {
  if (AllDigits(text)) {
    uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size()) return BadPoint(text);
    *out = {false, v, 0};
    return Status::Ok();
  }
  // YYYY-MM-DDTHH:MM:SS[.fraction]Z
  int year, month, day, hour, minute, second;
  const bool fields = Digits(text, 0, 4, &year) && text.size() > 4 && text[4] == '-' &&
                      Digits(text, 5, 2, &month) && text.size() > 7 && text[7] == '-' &&
                      Digits(text, 8, 2, &day) && text.size() > 10 &&
                      (text[10] == 'T' || text[10] == 't') && Digits(text, 11, 2, &hour) &&
                      text.size() > 13 && text[13] == ':' && Digits(text, 14, 2, &minute) &&
                      text.size() > 16 && text[16] == ':' && Digits(text, 17, 2, &second);
  if (!fields || year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
      minute > 59 || second > 59)
    return BadPoint(text);
  size_t at = 19;
  uint64_t fraction = 0;
  if (at < text.size() && text[at] == '.') {
    size_t digits = 0;
    for (++at; at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])); ++at) {
      if (digits++ < 9) fraction = fraction * 10 + static_cast<uint64_t>(text[at] - '0');
    }
    if (digits == 0) return BadPoint(text);
    for (; digits < 9; ++digits)
      fraction *= 10;
  }
  if (at + 1 != text.size() || (text[at] != 'Z' && text[at] != 'z')) return BadPoint(text);
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const std::time_t seconds = timegm(&tm);
  if (seconds < 0 || tm.tm_mday != day) return BadPoint(text);  // e.g. February 30
  *out = {true, 0, static_cast<uint64_t>(seconds) * kNanosPerSecond + fraction};
  return Status::Ok();
}

std::string FormatRecordTime(uint64_t time_ns) {
  const std::time_t seconds = static_cast<std::time_t>(time_ns / kNanosPerSecond);
  std::tm tm{};
  char text[64];
  if (gmtime_r(&seconds, &tm) == nullptr ||
      std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
    return std::to_string(time_ns) + " ns";
  char fraction[16];
  std::snprintf(fraction, sizeof fraction, ".%09llu",
                static_cast<unsigned long long>(time_ns % kNanosPerSecond));
  return std::string(text) + fraction + "Z";
}

}  // namespace dst::stagelog
