#include "aggregator/member/member_stats.h"

#include <algorithm>

namespace dst::member {

void MemberCounters::RecordLatency(std::chrono::steady_clock::duration latency) {
  const auto us = static_cast<uint64_t>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(latency).count()));
  ++latency_count;
  latency_total_us += us;
  latency_max_us.RaiseTo(us);
}

MemberCounters& MemberCounters::operator+=(const MemberCounters& other) {
  ios += other.ios;
  bytes += other.bytes;
  timeouts += other.timeouts;
  errors += other.errors;
  resends += other.resends;
  reconnects += other.reconnects;
  connect_failures += other.connect_failures;
  failures += other.failures;
  pings += other.pings;
  latency_count += other.latency_count;
  latency_total_us += other.latency_total_us;
  latency_max_us.RaiseTo(other.latency_max_us);
  return *this;
}

}  // namespace dst::member
