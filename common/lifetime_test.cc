#include "common/lifetime.h"

#include <doctest/doctest.h>

#include <memory>

namespace dst::lifetime_test {
namespace {

TEST_CASE("a LifetimeWatch expires with its Lifetime") {
  auto lifetime = std::make_unique<Lifetime>();
  const LifetimeWatch watch = lifetime->Watch();
  const LifetimeWatch copy = watch;
  CHECK_FALSE(watch.expired());
  lifetime.reset();
  CHECK(watch.expired());
  CHECK(copy.expired());
}

TEST_CASE("End() expires the watches before the owner goes") {
  Lifetime lifetime;
  const LifetimeWatch before = lifetime.Watch();
  lifetime.End();
  CHECK(lifetime.ended());
  CHECK(before.expired());
  CHECK(lifetime.Watch().expired());
  CHECK(LifetimeWatch().expired());  // a default watch watches nothing
}

}  // namespace
}  // namespace dst::lifetime_test
