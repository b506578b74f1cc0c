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

}  // namespace dst::member
