// RangeLock: shared/exclusive locks on ranges of blocks, granted in arrival
// order. A checksummed volume holds one per request: reads share their blocks,
// writes, trims and zeroes hold theirs exclusively, so that a read never sees
// a block's data and checksum from two different writes, and the
// read-modify-write of a partial block cannot interleave with another write
// to that block. A raw Volume uses one the same way for the partial blocks it
// merges for clients that send unaligned requests (volume.h).
//
// Contract: Acquire() calls `granted` exactly once, either before it returns
// (nothing overlapping is held or waiting) or later from inside a Release().
// A waiting request is granted only when nothing overlapping is held or
// waiting ahead of it, so neither readers nor writers starve. Release() takes
// the id given to `granted`.
//
// Threading: not thread-safe; the event-loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <list>

#include "common/callback.h"
#include "common/object_pool.h"

namespace dst::volume {

class RangeLock {
 public:
  using Id = uint64_t;
  using Granted = Callback<void(Id id)>;

  // Blocks [first, first + count); count > 0.
  void Acquire(uint64_t first, uint64_t count, bool exclusive, Granted granted);
  void Release(Id id);

  size_t held() const { return held_.size(); }
  size_t waiting() const { return waiting_.size(); }

 private:
  struct Range {
    Id id;
    uint64_t first;
    uint64_t end;
    bool exclusive;
    Granted granted;  // empty once granted

    bool Conflicts(const Range& other) const {
      return first < other.end && other.first < end && (exclusive || other.exclusive);
    }
  };
  // Nodes from the object pool: a request's range allocates nothing at a steady load.
  using Ranges = std::list<Range, PoolAllocator<Range>>;

  bool ConflictsWithHeld(const Range& range) const;

  Ranges held_;
  Ranges waiting_;
  Id next_id_ = 1;
};

}  // namespace dst::volume
