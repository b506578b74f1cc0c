// Test helpers for the checksummed data path: MemMember (volume/test_member.h's in-memory member,
// on one clock shared by all members, looked up by Area), Pattern(), AllZero(), MemberCaps(),
// and Pump() and RunFor() to drive the loop.
//
// Threading: one thread, the io_context's.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/member_format.h"
#include "aggregator/volume/member_io.h"
#include "aggregator/volume/test_member.h"

namespace dst::integrity::testing {

using volume::MemberIo;
using volume::MemberOp;

inline constexpr uint64_t KiB = 1024;
inline constexpr uint64_t MiB = 1024 * KiB;
inline constexpr int kPending = -1;  // a callback that has not run yet

inline std::vector<uint8_t> Pattern(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(size);
  for (uint8_t& b : out)
    b = static_cast<uint8_t>(rng());
  return out;
}

inline bool AllZero(const uint8_t* data, size_t size) {
  return std::all_of(data, data + size, [](uint8_t b) { return b == 0; });
}

// ---------------------------------------------------------------------------
// An in-memory member: volume::testing::MemMember on a clock shared by the test's members, that
// keeps what every write of up to one metadata page carried, and looks I/Os up by Area.

class MemMember final : public volume::testing::MemMember {
 public:
  MemMember(asio::io_context& io, uint64_t* clock, std::string name, uint64_t size,
            volume::MemberCapabilities caps)
      : volume::testing::MemMember(io, std::move(name), size, caps, clock) {
    record_writes_up_to = kMetadataPageSize;
  }

  // Submitted I/Os of kind `op` overlapping `area` (any, for flushes), from log entry `since` on.
  std::vector<Record> Ops(MemberOp op, Area area = {0, UINT64_MAX}, size_t since = 0) const {
    return OpsIn(op, area.offset, area.size, since);
  }
  size_t Count(MemberOp op, Area area = {0, UINT64_MAX}, size_t since = 0) const {
    return Ops(op, area, since).size();
  }
};

inline volume::MemberCapabilities MemberCaps() {
  volume::MemberCapabilities caps;
  caps.can_flush = true;
  caps.can_fua = true;
  caps.can_trim = true;
  caps.can_zero = true;
  return caps;
}

// Runs ready handlers until `until` holds or nothing is left to run (held completions wait).
inline bool Pump(asio::io_context& io, const std::function<bool()>& until) {
  for (int round = 0; round < 1000; ++round) {
    if (until()) return true;
    io.restart();
    if (io.poll() == 0) return until();
  }
  return until();
}

// Runs the loop in real time (for the cleaner's timer) until `until` holds, at most `limit`.
inline bool RunFor(asio::io_context& io, std::chrono::milliseconds limit,
                   const std::function<bool()>& until) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!until() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  return until();
}

}  // namespace dst::integrity::testing
