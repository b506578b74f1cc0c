#include "common/duration.h"

#include <doctest/doctest.h>

namespace dst::duration_test {
namespace {

using std::chrono::milliseconds;

TEST_CASE("ParseDuration accepts whole numbers with a unit, seconds by default") {
  CHECK(ParseDuration("5") == milliseconds(5000));
  CHECK(ParseDuration("0") == milliseconds(0));
  CHECK(ParseDuration("5s") == milliseconds(5000));
  CHECK(ParseDuration("250ms") == milliseconds(250));
  CHECK(ParseDuration("2m") == milliseconds(120000));
  CHECK(ParseDuration("2min") == milliseconds(120000));
  CHECK(ParseDuration("1h") == milliseconds(3600000));
  CHECK(ParseDuration("1500", milliseconds(1)) == milliseconds(1500));
  CHECK(ParseDuration("2s", milliseconds(1)) == milliseconds(2000));
}

TEST_CASE("ParseDuration rejects what it cannot read exactly") {
  CHECK_FALSE(ParseDuration(""));
  CHECK_FALSE(ParseDuration("s"));
  CHECK_FALSE(ParseDuration("-1"));
  CHECK_FALSE(ParseDuration("1.5s"));
  CHECK_FALSE(ParseDuration("5 s"));
  CHECK_FALSE(ParseDuration("5sec"));
  CHECK_FALSE(ParseDuration("99999999999h"));
}

TEST_CASE("FormatDuration uses the largest exact unit") {
  CHECK(FormatDuration(milliseconds(500)) == "500 ms");
  CHECK(FormatDuration(milliseconds(0)) == "0 s");
  CHECK(FormatDuration(milliseconds(5000)) == "5 s");
  CHECK(FormatDuration(milliseconds(1500)) == "1500 ms");
  CHECK(FormatDuration(milliseconds(120000)) == "2 min");
  CHECK(FormatDuration(milliseconds(7200000)) == "2 h");
}

}  // namespace
}  // namespace dst::duration_test
