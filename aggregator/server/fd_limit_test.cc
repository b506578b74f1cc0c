#include "aggregator/server/fd_limit.h"

#include <doctest/doctest.h>

#include <cerrno>

namespace dst::server::fd_limit_test {
namespace {

TEST_CASE("a soft limit that is enough is left alone") {
  rlim_t soft = 0;
  CHECK(PlanFileLimit(1024, 40, {4096, 4096}, &soft).ok());
  CHECK(soft == 4096);
  CHECK(PlanFileLimit(1024, 40, {RLIM_INFINITY, RLIM_INFINITY}, &soft).ok());
  CHECK(soft == RLIM_INFINITY);
  CHECK(PlanFileLimit(1024, 40, {1024 + 40 + kSpareDescriptors, 1 << 20}, &soft).ok());
  CHECK(soft == 1024 + 40 + kSpareDescriptors);
}

TEST_CASE("a soft limit too low is raised to the need, within the hard limit") {
  rlim_t soft = 0;
  // systemd's default: soft 1024, hard 524288.
  CHECK(PlanFileLimit(1024, 40, {1024, 524288}, &soft).ok());
  CHECK(soft == 1024 + 40 + kSpareDescriptors);
  CHECK(PlanFileLimit(1024, 40, {64, RLIM_INFINITY}, &soft).ok());
  CHECK(soft == 1024 + 40 + kSpareDescriptors);
}

TEST_CASE("a hard limit too low is an error that says what fits") {
  rlim_t soft = 0;
  const Status s = PlanFileLimit(1024, 40, {1024, 1024}, &soft);
  CHECK(s.err() == EMFILE);
  CHECK(s.message() ==
        "--max-connections 1024 needs 1128 open files (with 40 for members, listeners and the "
        "like and 64 spare), but at most 1024 are allowed (the hard RLIMIT_NOFILE: LimitNOFILE= "
        "in a systemd unit, ulimit -Hn in a shell); raise it, or give --max-connections 920 or "
        "less");
  // Nothing fits: only the limit can change.
  const std::string none = PlanFileLimit(10, 40, {64, 64}, &soft).message();
  CHECK(none.find("; raise it") == none.size() - std::string("; raise it").size());
}

TEST_CASE("this process's soft limit is raised when it is too low") {
  struct rlimit saved {};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
  REQUIRE((saved.rlim_max == RLIM_INFINITY || saved.rlim_max >= 512));
  struct rlimit low = saved;
  low.rlim_cur = 256;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  const Status s = EnsureFileLimit(300, 20);
  struct rlimit now {};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
  CHECK(s.ok());
  CHECK(now.rlim_cur == 300 + 20 + kSpareDescriptors);
  CHECK(now.rlim_max == saved.rlim_max);
}

}  // namespace
}  // namespace dst::server::fd_limit_test
