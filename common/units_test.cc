#include "common/units.h"

#include <doctest/doctest.h>

using dst::FormatSize;
using dst::ParseSize;

TEST_CASE("ParseSize accepts plain numbers and binary suffixes") {
  CHECK(ParseSize("0") == 0u);
  CHECK(ParseSize("4096") == 4096u);
  CHECK(ParseSize("512b") == 512u);
  CHECK(ParseSize("64K") == 65536u);
  CHECK(ParseSize("64k") == 65536u);
  CHECK(ParseSize("64KiB") == 65536u);
  CHECK(ParseSize("1M") == 1048576u);
  CHECK(ParseSize("10G") == 10ull << 30);
  CHECK(ParseSize("2TB") == 2ull << 40);
}

TEST_CASE("ParseSize rejects what is not a whole size") {
  CHECK_FALSE(ParseSize(""));
  CHECK_FALSE(ParseSize("K"));
  CHECK_FALSE(ParseSize("-1"));
  CHECK_FALSE(ParseSize("1.5G"));
  CHECK_FALSE(ParseSize("10X"));
  CHECK_FALSE(ParseSize("10 G"));
  CHECK_FALSE(ParseSize("10Gx"));
  CHECK_FALSE(ParseSize("8E"));                    // 2^63 does not fit
  CHECK_FALSE(ParseSize("99999999999999999999"));  // overflows 64 bits
  CHECK(ParseSize("7E") == 7ull << 60);
}

TEST_CASE("FormatSize prints the largest exact unit") {
  CHECK(FormatSize(0) == "0 B");
  CHECK(FormatSize(1000) == "1000 B");
  CHECK(FormatSize(65536) == "64 KiB");
  CHECK(FormatSize(3ull << 30) == "3 GiB");
  CHECK(FormatSize((1ull << 20) + 1024) == "1025 KiB");
}
