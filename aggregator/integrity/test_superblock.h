// Test helper for integrity_test: valid superblocks of a small volume whose members are all the
// same size, so that each test changes only what it is about. Version 1 (linear, stripe) and
// version 2 (mirror, raid10).
#pragma once

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/superblock.h"
#include "common/checksum.h"

namespace dst::integrity::testing {

inline constexpr uint64_t kTestMemberSize = uint64_t{64} << 20;
inline constexpr uint64_t kTestChunkSize = 64 * 1024;

inline Uuid TestUuid(uint8_t seed) {
  Uuid uuid;
  for (size_t i = 0; i < uuid.size(); ++i)
    uuid[i] = static_cast<uint8_t>(seed * 16 + i);
  return uuid;
}

// Who member `index` of a `count`-member test volume is: "vol0", created 1700000000, volume
// UUID TestUuid(0xa), its own UUID TestUuid(index + 1). Everything else at its default.
inline Superblock TestIdentity(uint32_t index, uint32_t count) {
  Superblock sb;
  sb.created = 1700000000;
  sb.volume_uuid = TestUuid(0xa);
  sb.member_uuid = TestUuid(static_cast<uint8_t>(index + 1));
  sb.name = "vol0";
  sb.member_index = index;
  sb.member_count = count;
  return sb;
}

// Writes `sb` into every superblock slot of a member's bytes, slot i with event i (the last slot
// is the newest), as `dst-aggregator create` leaves a member after its first updates.
inline void WriteSuperblockSlots(const Superblock& sb, std::vector<uint8_t>& member_bytes) {
  REQUIRE(member_bytes.size() >= SlotOffset(kSlotCount - 1) + kSlotSize);
  for (uint32_t slot = 0; slot < kSlotCount; ++slot) {
    Superblock copy = sb;
    copy.event = slot;
    const Status status = Encode(
        copy, std::span<uint8_t, kSlotSize>(member_bytes.data() + SlotOffset(slot), kSlotSize));
    REQUIRE_MESSAGE(status.ok(), status.message());
  }
}

// Member `index` of a `count`-member volume "vol0" with default format parameters.
inline Superblock TestMember(uint32_t index, uint32_t count,
                             volume::LayoutKind layout = volume::LayoutKind::kLinear) {
  Superblock sb = TestIdentity(index, count);
  sb.event = 2;
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

// Member `index` of a freshly created `count`-member mirror or raid10 "vol0" keeping `copies`
// copies: format version 2, every slot active, generation TestUuid(0xc), slot i owned by
// TestUuid(i + 1) (each member's own UUID, as TestMember gives them).
inline Superblock TestRedundantMember(uint32_t index, uint32_t count, uint32_t copies,
                                      volume::LayoutKind layout = volume::LayoutKind::kMirror) {
  Superblock sb = TestIdentity(index, count);
  sb.version = kFormatVersion2;
  sb.event = 2;
  sb.layout = layout;
  sb.copies = copies;
  REQUIRE(ComputeGeometry(kTestMemberSize, FormatParams{}, kFormatVersion2, &sb.geometry).ok());
  const uint64_t data = sb.geometry.data.size;
  if (layout == volume::LayoutKind::kRaid10) {
    sb.chunk_size = kTestChunkSize;
    sb.volume_size = count / copies * (data / kTestChunkSize * kTestChunkSize);
  } else {
    sb.volume_size = data;
  }
  sb.generation = TestUuid(0xc);
  for (uint32_t i = 0; i < count; ++i) {
    sb.member_states[i] = MemberState::kActive;
    sb.slot_members[i] = TestUuid(static_cast<uint8_t>(i + 1));
  }
  return sb;
}

// ---------------------------------------------------------------------------
// Slots as bytes.

using Slot = std::array<uint8_t, kSlotSize>;

inline Slot MustEncode(const Superblock& sb) {
  Slot slot;
  const Status status = Encode(sb, slot);
  REQUIRE_MESSAGE(status.ok(), status.message());
  return slot;
}

inline Superblock MustDecode(const Slot& slot) {
  Superblock sb;
  const Status status = Decode(slot, &sb);
  REQUIRE_MESSAGE(status.ok(), status.message());
  return sb;
}

// The slot checksum computed independently of superblock.cc, from the documented rule.
inline uint32_t ExpectedChecksum(Slot slot) {
  for (size_t i = 0; i < 4; ++i)
    slot[offsets::kChecksum + i] = 0;
  Checksummer crc = std::move(*Checksummer::Create(ChecksumAlgorithm::kCrc32c).checksummer);
  const Digest d = crc.Compute(slot);
  return uint32_t{d.bytes[0]} << 24 | uint32_t{d.bytes[1]} << 16 | uint32_t{d.bytes[2]} << 8 |
         d.bytes[3];
}

// Makes a patched slot pass the self-checksum again, so a test reaches the field checks.
inline void Reseal(Slot& slot) {
  const uint32_t crc = ExpectedChecksum(slot);
  for (size_t i = 0; i < 4; ++i)
    slot[offsets::kChecksum + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
}

inline void PatchBE(Slot& slot, size_t offset, uint64_t value, size_t width) {
  for (size_t i = 0; i < width; ++i) {
    slot[offset + i] = static_cast<uint8_t>(value >> (8 * (width - 1 - i)));
  }
}

inline std::vector<uint8_t> At(const Slot& slot, size_t offset, size_t size) {
  return {slot.begin() + offset, slot.begin() + offset + size};
}

}  // namespace dst::integrity::testing
