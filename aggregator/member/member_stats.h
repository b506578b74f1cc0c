// MemberCounters: what a member has done since start, for the periodic and
// on-demand stats lines, the status command and the metrics.
//
// Threading: each counter is written by its member alone, on the member's event-loop thread, and
// may be read from any thread: with `serve --threads N` the status, built on the home loop, sums
// the counters of the members each loop has of its own (aggregator/loop_volumes.h). A Counter is
// a relaxed atomic for that: its one writer loads and stores (plain moves, no locked
// instruction), a reader sees each counter whole, never torn.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace dst::member {

// A count with one writer thread and readers on any thread (see the top).
class Counter {
 public:
  Counter() = default;
  Counter(uint64_t value) : value_(value) {}  // NOLINT(google-explicit-constructor): a number
  Counter(const Counter& other) : value_(other.load()) {}
  Counter& operator=(const Counter& other) { return *this = other.load(); }
  Counter& operator=(uint64_t value) {
    value_.store(value, std::memory_order_relaxed);
    return *this;
  }
  operator uint64_t() const { return load(); }  // NOLINT(google-explicit-constructor)
  uint64_t load() const { return value_.load(std::memory_order_relaxed); }

  // The writer's own: a load and a store, not a read-modify-write.
  Counter& operator+=(uint64_t delta) { return *this = load() + delta; }
  Counter& operator-=(uint64_t delta) { return *this = load() - delta; }
  Counter& operator++() { return *this += 1; }
  Counter& operator--() { return *this -= 1; }

 private:
  std::atomic<uint64_t> value_{0};
};

struct MemberCounters {
  Counter ios;               // member I/Os answered with success
  Counter bytes;             // payload bytes of those reads and writes
  Counter timeouts;          // sends that passed their deadline
  Counter errors;            // error answers from the member
  Counter resends;           // sends after the first, of any cause
  Counter reconnects;        // connections re-established after a loss
  Counter connect_failures;  // reconnect attempts that failed or were refused
  Counter failures;          // I/Os that failed to their caller
  Counter pings;             // keepalive pings sent
  Counter latency_count;     // answers timed (success or error)
  Counter latency_total_us;
  Counter latency_max_us;

  void RecordLatency(std::chrono::steady_clock::duration latency);
  // Adds `other`'s counts (the largest latency is the larger of the two): what several
  // connections to one member did together. On a snapshot, by its one writer.
  MemberCounters& operator+=(const MemberCounters& other);
};

}  // namespace dst::member
