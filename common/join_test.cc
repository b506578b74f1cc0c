#include "common/join.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <functional>
#include <vector>

namespace dst::join_test {
namespace {

TEST_CASE("Join completes once, after the starter and every part, with the first error") {
  int calls = 0, result = -1;
  auto join = MakeJoin([&](int err) {
    ++calls;
    result = err;
  });
  std::vector<std::function<void(int)>> parts;
  for (int i = 0; i < 3; ++i)
    parts.push_back(Part(join));
  parts[1](EIO);
  parts[0](0);
  CHECK(calls == 0);
  join->Arrive(0);
  CHECK(calls == 0);  // one part still out
  parts[2](ENOSPC);
  CHECK(calls == 1);
  CHECK(result == EIO);
}

TEST_CASE("a part that completes at once cannot finish the Join before the starter arrives") {
  int calls = 0;
  auto join = MakeJoin([&](int) { ++calls; });
  Part(join)(0);
  CHECK(calls == 0);
  join->Arrive(0);
  CHECK(calls == 1);
}

TEST_CASE("BasicJoin holds any callable by value") {
  int result = -1;
  BasicJoin join([&result](int err) { result = err; });
  join.Add(2);
  join.Arrive(0);
  join.Arrive(EPERM);
  CHECK(join.outstanding() == 1);
  CHECK(result == -1);
  join.Arrive(0);
  CHECK(result == EPERM);
}

}  // namespace
}  // namespace dst::join_test
