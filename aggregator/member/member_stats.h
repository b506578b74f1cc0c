// MemberCounters: what a member has done since start, for the periodic and
// on-demand stats lines, the status command and the metrics.
//
// Threading: each counter is written by its member alone, on the member's event-loop thread, and
// may be read from any thread: with `serve --threads N` the status, built on the home loop, sums
// the counters of the members each loop has of its own (aggregator/loop_volumes.h): each is a
// SingleWriterCounter (common/counter.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/counter.h"

namespace dst::member {

// A count with one writer thread and readers on any thread (see the top).
using Counter = SingleWriterCounter;

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
