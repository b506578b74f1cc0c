// BackgroundRate: how fast a volume's background work (resync, rebuild,
// scrub) may go next to its clients (docs/redundancy.md, "Throttle"). The
// rule is md's (speed_limit_min/max) with a bound on what is in flight:
//   - clients busy (a request in flight, or one ended less than kIdleAfter
//     ago): the floor `min` bytes per second, one step in flight at a time;
//   - clients idle: up to `max` bytes per second, kIdleSteps in flight.
// The floor is always allowed, so a busy volume still heals.
//
// It is a token bucket kept in debt form: a step may start when the balance
// is not negative and is charged its bytes when it starts (a step larger
// than a second's worth still goes, and the next one waits for the debt to
// be repaid). The bucket refills at the rate of the current mode and holds at
// most kBurst worth of it. SetLimits() takes effect at once: the debt is cut
// to at most one second at the new rate, so that a lowered or raised rate
// shows within a second.
//
// Pure: time is passed in, nothing is scheduled here (the job runner waits).
// Threading: one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

#include "common/status.h"

namespace dst::integrity {

struct RateLimits {
  uint64_t min_bytes_per_second = uint64_t{1} << 20;    // the floor: 1 MiB/s
  uint64_t max_bytes_per_second = uint64_t{200} << 20;  // while clients are idle

  bool operator==(const RateLimits&) const = default;
};

// EINVAL unless 0 < min <= max.
Status CheckRateLimits(const RateLimits& limits);

class BackgroundRate {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kIdleAfter{100};
  static constexpr std::chrono::milliseconds kBurst{100};
  static constexpr size_t kIdleSteps = 4;
  // The window of rate(): bytes finished over about the last few seconds.
  static constexpr std::chrono::seconds kRateWindow{5};

  BackgroundRate(RateLimits limits, Clock::time_point now);

  void SetLimits(RateLimits limits, Clock::time_point now);
  const RateLimits& limits() const { return limits_; }

  // A client request starts or ends.
  void ClientStarted(Clock::time_point now);
  void ClientFinished(Clock::time_point now);
  bool clients_idle(Clock::time_point now) const;

  // Steps that may be in flight now.
  size_t max_steps(Clock::time_point now) const;
  // The earliest time a step may start (`now` when it may start now).
  Clock::time_point NextStart(Clock::time_point now);
  // A step of `bytes` starts: charged to the bucket.
  void Charge(uint64_t bytes, Clock::time_point now);
  // A step finished `bytes` of work: for rate().
  void Finished(uint64_t bytes, Clock::time_point now);
  // Bytes per second finished over the last kRateWindow (or since the first
  // step, when that is shorter); 0 before anything finished.
  double rate(Clock::time_point now) const;

 private:
  // Bytes per second of the current mode.
  uint64_t cap(Clock::time_point now) const;
  void Refill(Clock::time_point now);
  void Forget(Clock::time_point now);

  RateLimits limits_;
  double balance_ = 0;  // bytes; negative: debt
  Clock::time_point refilled_at_;
  size_t clients_in_flight_ = 0;
  Clock::time_point last_client_io_;
  bool any_client_io_ = false;
  struct Done {
    Clock::time_point at;
    uint64_t bytes;
  };
  std::deque<Done> finished_;
  Clock::time_point first_finished_;
};

}  // namespace dst::integrity
