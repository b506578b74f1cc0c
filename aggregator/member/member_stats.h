// MemberCounters: what a member has done since start, for the periodic and
// on-demand stats lines (and later the status command). Plain values.
//
// Threading: owned and updated by the member, on the event-loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dst::member {

struct MemberCounters {
  uint64_t ios = 0;               // member I/Os answered with success
  uint64_t bytes = 0;             // payload bytes of those reads and writes
  uint64_t timeouts = 0;          // sends that passed their deadline
  uint64_t errors = 0;            // error answers from the member
  uint64_t resends = 0;           // sends after the first, of any cause
  uint64_t reconnects = 0;        // connections re-established after a loss
  uint64_t connect_failures = 0;  // reconnect attempts that failed or were refused
  uint64_t failures = 0;          // I/Os that failed to their caller
  uint64_t pings = 0;             // keepalive pings sent
  uint64_t latency_count = 0;     // answers timed (success or error)
  uint64_t latency_total_us = 0;
  uint64_t latency_max_us = 0;

  void RecordLatency(std::chrono::steady_clock::duration latency);
};

}  // namespace dst::member
