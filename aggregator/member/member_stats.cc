#include "aggregator/member/member_stats.h"

namespace dst::member {

void MemberCounters::RecordLatency(std::chrono::steady_clock::duration latency) {
  ++latency_count;
  RecordLatencyUs(latency_total_us, latency_max_us, latency);
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
