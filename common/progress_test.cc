#include "common/progress.h"

#include <doctest/doctest.h>

using dst::Progress;

TEST_CASE("progress line: percent, sizes, rate and ETA") {
  CHECK(Progress::Line("zeroing", 512u << 20, 2048u << 20, 2.0) ==
        "zeroing: 25% (512 MiB of 2 GiB) at 256 MiB/s, ETA 6 s");
  // Nothing done yet: no rate to speak of, no ETA.
  CHECK(Progress::Line("x", 0, 100, 0.0) == "x: 0% (0 B of 100 B) at -");
  // Done: no ETA; an empty total counts as done.
  CHECK(Progress::Line("x", 100, 100, 1.0) == "x: 100% (100 B of 100 B) at 100 B/s");
  CHECK(Progress::Line("x", 0, 0, 1.0) == "x: 100% (0 B of 0 B) at 0 B/s");
}

TEST_CASE("progress line at a measured rate: ETA from what is left") {
  // A job that resumed at 3 GiB of 4 GiB, now copying at 256 MiB/s.
  CHECK(Progress::LineAtRate("rebuilding v slot 1", uint64_t{3072} << 20, uint64_t{4096} << 20,
                             256.0 * (1 << 20)) ==
        "rebuilding v slot 1: 75% (3 GiB of 4 GiB) at 256 MiB/s, ETA 4 s");
  CHECK(Progress::LineAtRate("x", 10, 100, -1) == "x: 10% (10 B of 100 B) at -");
  CHECK(Progress::LineAtRate("x", 10, 100, 0) == "x: 10% (10 B of 100 B) at 0 B/s");
}
