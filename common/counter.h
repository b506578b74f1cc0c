// SingleWriterCounter: a count that one thread writes and any thread reads.
//
// Threading: the writer's updates are a relaxed load and a relaxed store (plain moves, no locked
// instruction, no cache line taken from another core); a reader on any thread sees each counter
// whole, never torn. Two writers would lose counts: a counter updated from several threads is
// split into one per thread and summed when read (aggregator/server/volume_traffic.h).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace dst {

class SingleWriterCounter {
 public:
  SingleWriterCounter() = default;
  SingleWriterCounter(uint64_t value) : value_(value) {}  // NOLINT(google-explicit-constructor)
  SingleWriterCounter(const SingleWriterCounter& other) : value_(other.load()) {}
  SingleWriterCounter& operator=(const SingleWriterCounter& other) { return *this = other.load(); }
  SingleWriterCounter& operator=(uint64_t value) {
    value_.store(value, std::memory_order_relaxed);
    return *this;
  }
  operator uint64_t() const { return load(); }  // NOLINT(google-explicit-constructor)
  uint64_t load() const { return value_.load(std::memory_order_relaxed); }

  // The writer's own: a load and a store, not a read-modify-write.
  SingleWriterCounter& operator+=(uint64_t delta) { return *this = load() + delta; }
  SingleWriterCounter& operator-=(uint64_t delta) { return *this = load() - delta; }
  SingleWriterCounter& operator++() { return *this += 1; }
  SingleWriterCounter& operator--() { return *this -= 1; }
  // Keeps the larger of the two.
  void RaiseTo(uint64_t value) {
    if (value > load()) *this = value;
  }

 private:
  std::atomic<uint64_t> value_{0};
};

// Adds `latency`, in whole microseconds (never negative), to `total_us` and raises `max_us` to it:
// the latency pair of the member and volume counters, each kept by its one writer.
inline void RecordLatencyUs(SingleWriterCounter& total_us, SingleWriterCounter& max_us,
                            std::chrono::steady_clock::duration latency) {
  const auto us = static_cast<uint64_t>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(latency).count()));
  total_us += us;
  max_us.RaiseTo(us);
}

}  // namespace dst
