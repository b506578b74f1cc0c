// Parsing and printing of sizes as users write them: "4096", "64K", "1.5G" is
// not accepted (sizes are whole bytes), "10GiB", "512b". Suffixes are binary
// (K = 1024), case-insensitive, with optional "iB"/"B". Pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dst {

// Returns the size in bytes, or nullopt if `text` is not a size or overflows
// 63 bits (NBD sizes and offsets are signed in most implementations).
std::optional<uint64_t> ParseSize(std::string_view text);

// "64 KiB", "1 GiB", "1000 B": exact when it can be, for log lines and errors.
std::string FormatSize(uint64_t bytes);

}  // namespace dst
