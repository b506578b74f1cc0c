// MergeGate: lets the copies of a raw volume on other event loops (aggregator/loop_volumes.h)
// write on their own until the volume first merges an unaligned write, and sends their writes to
// the home loop's volume from then on.
//
// A merge (read-modify-write of a partial block, volume.h) must not write back stale bytes over
// a concurrent write to the same block; the home volume orders its own writes against merges
// with its range lock, but a copy's writes it does not see. So before the first merge the home
// volume closes the gate and waits until no copy has a write in flight; a copy asks the gate
// before each write, zero or trim (Enter), which it makes itself only while the gate is open.
// Closing is for good: merges are rare (clients honour the minimum block), and once one has
// happened more are likely.
//
// Threading: Enter and Leave on copy `loop`'s thread, Close and Drained on the home loop's. Each
// loop's count has one writer and sits on a cache line of its own; Enter's store and load and
// Close's are sequentially consistent, so that either the copy sees the gate closed or the home
// loop sees its write in flight, never neither.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace dst::volume {

class MergeGate {
 public:
  // Loops 0..loops-1 (0, home, never enters).
  explicit MergeGate(size_t loops) : counts_(std::make_unique<Count[]>(loops)), loops_(loops) {}

  // Whether loop `loop`'s copy may make a modification itself; if so, Leave once it is done.
  bool Enter(size_t loop) {
    // Once closed, refused without touching the count, which then only falls to zero.
    if (closed_.load()) return false;
    std::atomic<uint64_t>& n = counts_[loop].in_flight;
    n.store(n.load(std::memory_order_relaxed) + 1);
    if (!closed_.load()) return true;
    n.store(n.load(std::memory_order_relaxed) - 1, std::memory_order_release);
    return false;
  }
  void Leave(size_t loop) {
    std::atomic<uint64_t>& n = counts_[loop].in_flight;
    n.store(n.load(std::memory_order_relaxed) - 1, std::memory_order_release);
  }

  // From now on Enter refuses.
  void Close() { closed_.store(true); }
  bool closed() const { return closed_.load(std::memory_order_relaxed); }
  // No copy has a modification in flight (after Close: none will again).
  bool Drained() const {
    for (size_t i = 0; i < loops_; ++i)
      if (counts_[i].in_flight.load(std::memory_order_acquire) != 0) return false;
    return true;
  }

 private:
  struct alignas(64) Count {
    std::atomic<uint64_t> in_flight{0};
  };

  std::atomic<bool> closed_{false};
  std::unique_ptr<Count[]> counts_;
  const size_t loops_;
};

}  // namespace dst::volume
