// Test helper for integrity_test: valid superblocks of a small volume whose members are all the
// same size, so that each test changes only what it is about.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>

#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/superblock.h"

namespace dst::integrity::testing {

inline constexpr uint64_t kTestMemberSize = uint64_t{64} << 20;
inline constexpr uint64_t kTestChunkSize = 64 * 1024;

inline Uuid TestUuid(uint8_t seed) {
  Uuid uuid;
  for (size_t i = 0; i < uuid.size(); ++i)
    uuid[i] = static_cast<uint8_t>(seed * 16 + i);
  return uuid;
}

// Member `index` of a `count`-member volume "vol0" with default format parameters.
inline Superblock TestMember(uint32_t index, uint32_t count,
                             volume::LayoutKind layout = volume::LayoutKind::kLinear) {
  Superblock sb;
  sb.event = 2;
  sb.created = 1700000000;
  sb.volume_uuid = TestUuid(0xa);
  sb.member_uuid = TestUuid(static_cast<uint8_t>(index + 1));
  sb.name = "vol0";
  sb.member_index = index;
  sb.member_count = count;
  sb.layout = layout;
  REQUIRE(ComputeGeometry(kTestMemberSize, FormatParams{}, &sb.geometry).ok());
  const uint64_t data = sb.geometry.data.size;
  if (layout == volume::LayoutKind::kStripe) {
    sb.chunk_size = kTestChunkSize;
    sb.volume_size = count * (data / kTestChunkSize * kTestChunkSize);
  } else {
    sb.volume_size = count * data;
  }
  for (uint32_t i = 0; i < count; ++i)
    sb.member_states[i] = MemberState::kActive;
  return sb;
}

}  // namespace dst::integrity::testing
