#include "common/units.h"

#include <cctype>
#include <charconv>
#include <limits>

namespace dst {

namespace {

// Returns the power-of-1024 exponent of a suffix, or -1 if it is not one.
int SuffixExponent(std::string_view suffix) {
  std::string s;
  for (char c : suffix)
    s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s.empty() || s == "b") return 0;
  static constexpr std::string_view kLetters = "kmgtpe";
  if (s.size() > 3) return -1;
  const auto pos = kLetters.find(s[0]);
  if (pos == std::string_view::npos) return -1;
  const std::string_view rest = std::string_view(s).substr(1);
  if (rest.empty() || rest == "b" || rest == "ib") return static_cast<int>(pos) + 1;
  return -1;
}

}  // namespace

std::optional<uint64_t> ParseSize(std::string_view text) {
  uint64_t number = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, number);
  if (ec != std::errc() || ptr == begin) return std::nullopt;
  const int exponent = SuffixExponent(std::string_view(ptr, end - ptr));
  if (exponent < 0) return std::nullopt;
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (int i = 0; i < exponent; ++i) {
    if (number > kMax / 1024) return std::nullopt;
    number *= 1024;
  }
  if (number > kMax) return std::nullopt;
  return number;
}

std::string FormatSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  uint64_t value = bytes;
  while (value != 0 && value % 1024 == 0 && unit < 6) {
    value /= 1024;
    ++unit;
  }
  return std::to_string(value) + " " + kUnits[unit];
}

}  // namespace dst
