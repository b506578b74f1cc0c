#include "aggregator/integrity/background_rate.h"

#include <algorithm>
#include <cerrno>

namespace dst::integrity {

namespace {

double Seconds(BackgroundRate::Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

Status CheckRateLimits(const RateLimits& limits) {
  if (limits.min_bytes_per_second == 0)
    return Status::Error(EINVAL, "the minimum rate must be more than 0");
  if (limits.min_bytes_per_second > limits.max_bytes_per_second)
    return Status::Error(EINVAL, "the minimum rate is above the maximum");
  return Status::Ok();
}

BackgroundRate::BackgroundRate(RateLimits limits, Clock::time_point now)
    : limits_(limits), refilled_at_(now) {}

// The debt is what makes the next step wait: cut to one second at the new
// rate, a change shows within a second whichever way it goes.
void BackgroundRate::SetLimits(RateLimits limits, Clock::time_point now) {
  Refill(now);
  limits_ = limits;
  balance_ = std::max(balance_, -static_cast<double>(cap(now)));
}

void BackgroundRate::ClientStarted(Clock::time_point now) {
  Refill(now);  // the time before counts at the idle rate
  ++clients_in_flight_;
  last_client_io_ = now;
  any_client_io_ = true;
}

void BackgroundRate::ClientFinished(Clock::time_point now) {
  Refill(now);
  if (clients_in_flight_ > 0) --clients_in_flight_;
  last_client_io_ = now;
}

bool BackgroundRate::clients_idle(Clock::time_point now) const {
  if (clients_in_flight_ > 0) return false;
  return !any_client_io_ || now - last_client_io_ >= kIdleAfter;
}

size_t BackgroundRate::max_steps(Clock::time_point now) const {
  return clients_idle(now) ? kIdleSteps : 1;
}

uint64_t BackgroundRate::cap(Clock::time_point now) const {
  return clients_idle(now) ? limits_.max_bytes_per_second : limits_.min_bytes_per_second;
}

void BackgroundRate::Refill(Clock::time_point now) {
  if (now <= refilled_at_) return;
  const double per_second = static_cast<double>(cap(now));
  const double burst = per_second * Seconds(kBurst);
  balance_ = std::min(balance_ + per_second * Seconds(now - refilled_at_), burst);
  refilled_at_ = now;
}

BackgroundRate::Clock::time_point BackgroundRate::NextStart(Clock::time_point now) {
  Refill(now);
  if (balance_ >= 0) return now;
  const double wait = -balance_ / static_cast<double>(cap(now));
  return now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait));
}

void BackgroundRate::Charge(uint64_t bytes, Clock::time_point now) {
  Refill(now);
  balance_ -= static_cast<double>(bytes);
}

void BackgroundRate::Finished(uint64_t bytes, Clock::time_point now) {
  if (finished_.empty()) first_finished_ = now;
  finished_.push_back({now, bytes});
  Forget(now);
}

void BackgroundRate::Forget(Clock::time_point now) {
  while (!finished_.empty() && now - finished_.front().at > kRateWindow)
    finished_.pop_front();
}

double BackgroundRate::rate(Clock::time_point now) const {
  uint64_t bytes = 0;
  Clock::time_point first = now;
  for (const Done& d : finished_) {
    if (now - d.at > kRateWindow) continue;
    bytes += d.bytes;
    first = std::min(first, d.at);
  }
  if (bytes == 0) return 0;
  // Over the window, or since the first step finished when that is shorter.
  const Clock::time_point since = std::max(first_finished_, now - kRateWindow);
  const Clock::duration span =
      std::max<Clock::duration>(now - since, std::chrono::milliseconds(100));
  return static_cast<double>(bytes) / Seconds(span);
}

}  // namespace dst::integrity
