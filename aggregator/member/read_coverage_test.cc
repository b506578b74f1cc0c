#include "aggregator/member/read_coverage.h"

#include <doctest/doctest.h>

namespace dst::member::read_coverage_test {
namespace {

TEST_CASE("one chunk covering the whole read covers it") {
  ReadCoverage coverage;
  coverage.Add(0, 4096);
  CHECK(coverage.Covers(4096));
}

TEST_CASE("a short answer does not cover the read") {
  ReadCoverage coverage;
  coverage.Add(0, 2048);
  CHECK_FALSE(coverage.Covers(4096));
}

TEST_CASE("chunks in any order cover the read when they meet") {
  ReadCoverage coverage;
  coverage.Add(3072, 4096);
  coverage.Add(1024, 3072);
  coverage.Add(0, 1024);
  CHECK(coverage.Covers(4096));
}

TEST_CASE("overlapping chunks whose lengths add up but leave a gap do not cover it") {
  // What libnbd's own check (the sum of chunk lengths) lets through.
  ReadCoverage coverage;
  coverage.Add(0, 2048);
  coverage.Add(0, 2048);
  CHECK_FALSE(coverage.Covers(4096));
}

TEST_CASE("a gap in the middle is found") {
  ReadCoverage coverage;
  coverage.Add(0, 1024);
  coverage.Add(2048, 4096);
  CHECK_FALSE(coverage.Covers(4096));
}

TEST_CASE("overlapping chunks that reach the end cover it") {
  ReadCoverage coverage;
  coverage.Add(2048, 4096);
  coverage.Add(0, 3000);
  CHECK(coverage.Covers(4096));
}

TEST_CASE("no chunk at all covers only an empty read") {
  CHECK_FALSE(ReadCoverage().Covers(1));
  CHECK(ReadCoverage().Covers(0));
}

}  // namespace
}  // namespace dst::member::read_coverage_test
