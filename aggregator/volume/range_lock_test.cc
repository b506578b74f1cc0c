#include "aggregator/volume/range_lock.h"

#include <vector>

#include <doctest/doctest.h>

using dst::volume::RangeLock;

TEST_CASE("range lock: shared ranges overlap, exclusive ones wait in order") {
  RangeLock lock;
  std::vector<RangeLock::Id> granted;
  auto record = [&](RangeLock::Id id) { granted.push_back(id); };
  lock.Acquire(0, 4, false, record);  // reader 1
  lock.Acquire(2, 4, false, record);  // reader 2 shares blocks 2-3
  REQUIRE(granted.size() == 2);
  lock.Acquire(3, 1, true, record);   // writer waits for both readers
  lock.Acquire(3, 1, false, record);  // a later reader waits behind the writer
  lock.Acquire(10, 1, true, record);  // no overlap: granted at once
  CHECK(granted.size() == 3);
  CHECK(lock.waiting() == 2);
  lock.Release(granted[0]);
  CHECK(granted.size() == 3);  // reader 2 still holds block 3
  lock.Release(granted[1]);
  REQUIRE(granted.size() == 4);  // the writer
  CHECK(lock.waiting() == 1);
  lock.Release(granted[3]);
  CHECK(granted.size() == 5);  // the last reader
  CHECK(lock.waiting() == 0);
  lock.Release(granted[4]);
  lock.Release(granted[2]);
  CHECK(lock.held() == 0);
}

TEST_CASE("range lock: a callback may take the next lock from inside Release") {
  RangeLock lock;
  RangeLock::Id first = 0, inner = 0;
  lock.Acquire(0, 1, true, [&](RangeLock::Id id) { first = id; });
  lock.Acquire(0, 1, true, [&](RangeLock::Id id) {
    lock.Release(id);
    lock.Acquire(0, 1, true, [&](RangeLock::Id again) { inner = again; });
  });
  lock.Release(first);
  CHECK(inner != 0);
  CHECK(lock.held() == 1);
}
