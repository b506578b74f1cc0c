#include "common/duration.h"

#include <charconv>
#include <cstdint>

namespace dst {

namespace {

constexpr int64_t kMaxMilliseconds = int64_t{10} * 365 * 24 * 3600 * 1000;

// Milliseconds per unit, or 0 if `unit` is not one.
int64_t UnitMilliseconds(std::string_view unit, int64_t bare_unit) {
  if (unit.empty()) return bare_unit;
  if (unit == "s") return 1000;
  if (unit == "ms") return 1;
  if (unit == "m" || unit == "min") return 60 * 1000;
  if (unit == "h") return 3600 * 1000;
  return 0;
}

}  // namespace

std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text,
                                                       std::chrono::milliseconds bare_unit) {
  int64_t number = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, number);
  if (ec != std::errc() || ptr == begin || number < 0) return std::nullopt;
  const int64_t unit = UnitMilliseconds(std::string_view(ptr, end - ptr), bare_unit.count());
  if (unit <= 0 || number > kMaxMilliseconds / unit) return std::nullopt;
  return std::chrono::milliseconds(number * unit);
}

std::string FormatDuration(std::chrono::milliseconds duration) {
  const int64_t ms = duration.count();
  if (ms != 0 && ms % (3600 * 1000) == 0) return std::to_string(ms / (3600 * 1000)) + " h";
  if (ms != 0 && ms % (60 * 1000) == 0) return std::to_string(ms / (60 * 1000)) + " min";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

}  // namespace dst
