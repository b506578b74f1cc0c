// BackgroundRate on a manual clock: the floor while clients are busy, the
// maximum while they are idle, the bound on steps in flight, rate changes
// within a second, and the measured rate.
#include "aggregator/integrity/background_rate.h"

#include <doctest/doctest.h>

namespace dst::integrity::background_rate_test {
namespace {

using namespace std::chrono_literals;
using Clock = BackgroundRate::Clock;

constexpr uint64_t MiB = uint64_t{1} << 20;
constexpr uint64_t kStep = MiB;

RateLimits Limits(uint64_t min_mib, uint64_t max_mib) {
  return {min_mib * MiB, max_mib * MiB};
}

// Starts steps of kStep as soon as the rate allows, for `length` from `start`;
// returns how many started.
int StepsIn(BackgroundRate& rate, Clock::time_point start, Clock::duration length) {
  int steps = 0;
  Clock::time_point now = start;
  for (int guard = 0; guard < 100000; ++guard) {
    now = rate.NextStart(now);
    if (now >= start + length) break;
    rate.Charge(kStep, now);
    ++steps;
  }
  return steps;
}

TEST_CASE("rate limits must be 0 < min <= max") {
  CHECK(CheckRateLimits(Limits(1, 200)).ok());
  CHECK(CheckRateLimits(Limits(5, 5)).ok());
  CHECK(CheckRateLimits({0, 10 * MiB}).err() == EINVAL);
  CHECK(CheckRateLimits(Limits(20, 10)).err() == EINVAL);
}

TEST_CASE("clients idle: up to the maximum rate, four steps in flight") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(1, 50), t0);
  CHECK(rate.clients_idle(t0));
  CHECK(rate.max_steps(t0) == BackgroundRate::kIdleSteps);
  // 10 s at 50 MiB/s: about 500 steps of 1 MiB (one ahead on credit).
  const int steps = StepsIn(rate, t0, 10s);
  CHECK(steps >= 499);
  CHECK(steps <= 501);
}

TEST_CASE("clients busy: the floor, one step in flight") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(2, 200), t0);
  rate.ClientStarted(t0);
  CHECK_FALSE(rate.clients_idle(t0 + 1h));  // a request still in flight
  CHECK(rate.max_steps(t0) == 1);
  const int steps = StepsIn(rate, t0, 10s);
  CHECK(steps >= 19);
  CHECK(steps <= 21);
}

TEST_CASE("clients are idle kIdleAfter after their last request ended") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(1, 200), t0);
  rate.ClientStarted(t0);
  rate.ClientFinished(t0 + 10ms);
  CHECK_FALSE(rate.clients_idle(t0 + 10ms + BackgroundRate::kIdleAfter - 1ms));
  CHECK(rate.clients_idle(t0 + 10ms + BackgroundRate::kIdleAfter));
}

TEST_CASE("the floor is always allowed: a busy volume still gets its minimum") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(4, 200), t0);
  // A client request every 10 ms, for 5 s: never idle.
  Clock::time_point now = t0;
  int steps = 0;
  for (int i = 0; i < 500; ++i) {
    rate.ClientStarted(now);
    rate.ClientFinished(now + 1ms);
    now += 10ms;
    while (rate.NextStart(now) <= now) {
      rate.Charge(kStep, now);
      ++steps;
    }
  }
  CHECK(steps >= 19);  // 4 MiB/s for 5 s
  CHECK(steps <= 21);
}

TEST_CASE("a lowered rate shows within a second") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(1, 200), t0);
  // Deep in debt at 200 MiB/s: 100 steps charged at once.
  for (int i = 0; i < 100; ++i)
    rate.Charge(kStep, t0);
  rate.SetLimits(Limits(1, 10), t0);
  // The debt is cut to one second at the new maximum.
  CHECK(rate.NextStart(t0) <= t0 + 1s);
  CHECK(rate.NextStart(t0) > t0 + 900ms);
  // From then on, 10 MiB/s.
  const int steps = StepsIn(rate, t0 + 1s, 5s);
  CHECK(steps >= 49);
  CHECK(steps <= 51);
}

TEST_CASE("a raised rate shows within a second") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(1, 1), t0);
  for (int i = 0; i < 30; ++i)
    rate.Charge(kStep, t0);  // 30 s of debt at 1 MiB/s
  rate.SetLimits(Limits(1, 100), t0);
  CHECK(rate.NextStart(t0) <= t0 + 1s);
  const int steps = StepsIn(rate, t0 + 1s, 2s);
  CHECK(steps >= 199);
}

TEST_CASE("idle time does not bank more than a burst") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(1, 100), t0);
  // An hour idle, then as many steps at once as the bucket allows.
  const Clock::time_point later = t0 + 1h;
  int at_once = 0;
  while (rate.NextStart(later) <= later && at_once < 1000) {
    rate.Charge(kStep, later);
    ++at_once;
  }
  CHECK(at_once <= 11);  // 100 ms at 100 MiB/s, and the step that goes on credit
}

TEST_CASE("rate() is the bytes finished over the last few seconds") {
  const Clock::time_point t0{};
  BackgroundRate rate(Limits(1, 200), t0);
  CHECK(rate.rate(t0) == 0);
  for (int i = 1; i <= 20; ++i)
    rate.Finished(kStep, t0 + i * 100ms);  // 10 MiB/s for 2 s
  CHECK(rate.rate(t0 + 2s) == doctest::Approx(10.0 * MiB).epsilon(0.15));
  // Long after, the window is empty.
  CHECK(rate.rate(t0 + 1min) == 0);
}

}  // namespace
}  // namespace dst::integrity::background_rate_test
