// Hex text for known-answer tests: vectors are written as hex, bytes compared as hex.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dst::testing {

// "0a1b" -> {0x0a, 0x1b}; `hex` has an even number of hex digits.
inline std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Lower-case, two digits a byte.
inline std::string ToHex(std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

}  // namespace dst::testing
