// Parsing and printing of durations as users write them in options and
// config files: "5" (seconds), "5s", "500ms", "2m", "1h". Whole numbers only,
// so that a value means exactly what it says. Pure functions.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace dst {

// Whole number with an optional unit: ms, s, m (or min), h; a bare number is
// in `bare_unit`. Returns nullopt for anything else, negative values, or
// more than 10 years (so that deadlines computed from it cannot overflow).
std::optional<std::chrono::milliseconds> ParseDuration(
    std::string_view text, std::chrono::milliseconds bare_unit = std::chrono::seconds(1));

// "500 ms", "5 s", "2 min": the largest unit that keeps the value exact.
std::string FormatDuration(std::chrono::milliseconds duration);

}  // namespace dst
