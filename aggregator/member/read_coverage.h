// ReadCoverage: what a member's answer to a read has covered, as [begin, end)
// offsets from the start of the read.
//
// Read buffers are not initialised beforehand (that would cost a memset of
// every payload), so a read may succeed only if the chunks of the answer
// cover all of it. libnbd checks only that their lengths add up, which
// chunks that overlap (from a broken or hostile server) would pass, leaving
// stale memory in the buffer; here their union must be the whole range.
// Chunks may come in any order (the NBD spec allows it).
//
// Threading: one read's; no sharing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace dst::member {

class ReadCoverage {
 public:
  void Add(uint64_t begin, uint64_t end) {
    if (begin <= covered_)
      covered_ = std::max(covered_, end);
    else
      beyond_gap_.push_back({begin, end});  // out of order: sorted out in Covers
  }

  // Whether [0, length) is covered; call once, when the answer is complete.
  bool Covers(uint64_t length) {
    std::sort(beyond_gap_.begin(), beyond_gap_.end());
    for (const auto& [begin, end] : beyond_gap_)
      if (begin <= covered_) covered_ = std::max(covered_, end);
    beyond_gap_.clear();
    return covered_ >= length;
  }

 private:
  uint64_t covered_ = 0;  // [0, covered_) is covered
  std::vector<std::pair<uint64_t, uint64_t>> beyond_gap_;
};

}  // namespace dst::member
