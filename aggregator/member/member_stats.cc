#include "aggregator/member/member_stats.h"

#include <algorithm>

namespace dst::member {

void MemberCounters::RecordLatency(std::chrono::steady_clock::duration latency) {
  const auto us = static_cast<uint64_t>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(latency).count()));
  ++latency_count;
  latency_total_us += us;
  latency_max_us = std::max(latency_max_us, us);
}

std::string MemberCounters::Format() const {
  const uint64_t average = latency_count ? latency_total_us / latency_count : 0;
  return "ios=" + std::to_string(ios) + " bytes=" + std::to_string(bytes) +
         " timeouts=" + std::to_string(timeouts) + " errors=" + std::to_string(errors) +
         " resends=" + std::to_string(resends) + " reconnects=" + std::to_string(reconnects) +
         " connect_failures=" + std::to_string(connect_failures) +
         " failures=" + std::to_string(failures) + " pings=" + std::to_string(pings) +
         " latency_avg_us=" + std::to_string(average) +
         " latency_max_us=" + std::to_string(latency_max_us);
}

}  // namespace dst::member
