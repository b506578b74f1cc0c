// Member format version 2 (mirror and raid10): golden bytes at every offset of docs/format.md's
// version 2 table, the validation rules, and how version 1 slots keep reading as before.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_superblock.h"

namespace dst::integrity::superblock_v2_test {
namespace {

using testing::At;
using testing::ExpectedChecksum;
using testing::MustDecode;
using testing::MustEncode;
using testing::PatchBE;
using testing::Reseal;
using testing::Slot;
using testing::TestMember;
using testing::TestRedundantMember;
using testing::TestUuid;
using volume::LayoutKind;
using V = std::vector<uint8_t>;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

V UuidBytes(const Uuid& uuid) {
  return V(uuid.begin(), uuid.end());
}

// Every version 2 field away from its default: member 3 of a keyed, dirty, 6-member raid10 of 2
// copies whose slots are in every state but failed and missing.
Superblock FullRedundantSuperblock() {
  Superblock sb = TestRedundantMember(3, 6, 2, LayoutKind::kRaid10);
  sb.event = 0x0102030405060708;
  sb.state = VolumeState::kDirty;
  sb.chunk_size = 128 * KiB;
  const FormatParams params{8192, 8 * MiB, ChecksumAlgorithm::kBlake2bKeyed};
  REQUIRE(ComputeGeometry(testing::kTestMemberSize, params, kFormatVersion2, &sb.geometry).ok());
  sb.volume_size = 3 * (sb.geometry.data.size / sb.chunk_size * sb.chunk_size);
  const std::string key = "secret";
  REQUIRE(KeyIdentity({reinterpret_cast<const uint8_t*>(key.data()), key.size()}, &sb.key_id).ok());
  const MemberState states[] = {MemberState::kActive, MemberState::kStale,
                                MemberState::kActive, MemberState::kRebuilding,
                                MemberState::kSpare,  MemberState::kResyncing};
  std::copy(std::begin(states), std::end(states), sb.member_states.begin());
  sb.history = {TestUuid(0xd), TestUuid(0xe)};
  sb.map_epoch = 0x0102030405060700;
  sb.ownership_epoch = kMaxOwnershipEpoch;
  sb.owner_uuid = TestUuid(0xf);
  sb.slot_flags[0] = kSlotWriteMostly;
  sb.slot_flags[1] = kSlotWantReplacement;
  sb.slot_flags[2] = kSlotWriteMostly | kSlotWantReplacement;
  sb.slot_flags[4] = kSlotWriteMostly;
  sb.stale_since[1] = 0x0102030405060701;
  sb.stale_since[3] = 0x11;
  sb.stale_since[4] = 0x12;
  sb.stale_since[5] = 0x13;
  sb.cursor[3] = 1000;
  sb.cursor[5] = 7;
  sb.scrub = {.mode = ScrubMode::kRepair,
              .paused = true,
              .cursor = 0x1234,
              .errors = 0x0a0b,
              .last_result = ScrubResult::kErrors,
              .last_completed = 0x6553f100};
  return sb;
}

// A big-endian u64, as bytes.
V BE64(uint64_t value) {
  V out(8);
  for (size_t i = 0; i < 8; ++i)
    out[i] = static_cast<uint8_t>(value >> (56 - 8 * i));
  return out;
}

TEST_CASE("superblock v2: every field survives Encode and Decode") {
  const Superblock full = FullRedundantSuperblock();
  CHECK(MustDecode(MustEncode(full)) == full);
  const Superblock mirror = TestRedundantMember(1, 2, 2);
  CHECK(MustDecode(MustEncode(mirror)) == mirror);
  const Superblock raid10 = TestRedundantMember(5, 8, 4, LayoutKind::kRaid10);
  CHECK(MustDecode(MustEncode(raid10)) == raid10);
  // Re-encoding what was decoded gives the same bytes.
  const Slot slot = MustEncode(full);
  CHECK(MustEncode(MustDecode(slot)) == slot);
}

TEST_CASE("superblock v2: golden bytes at the offsets of docs/format.md") {
  const Superblock sb = FullRedundantSuperblock();
  const Slot slot = MustEncode(sb);
  // The version 1 part: the same offsets, version 2, layout code 4.
  CHECK(At(slot, 0, 8) == V{'D', 'S', 'T', 'M', 'E', 'M', 'B', '1'});
  CHECK(At(slot, 8, 4) == V{0, 0, 0, 2});
  CHECK(At(slot, 12, 4) == V{0, 0, 0, 0});
  const uint32_t crc = ExpectedChecksum(slot);
  CHECK(At(slot, 16, 4) ==
        V{uint8_t(crc >> 24), uint8_t(crc >> 16), uint8_t(crc >> 8), uint8_t(crc)});
  CHECK(At(slot, 20, 4) == V{0, 0, 0, 0});
  CHECK(At(slot, 24, 8) == V{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(At(slot, 32, 8) == V{0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00});
  CHECK(At(slot, 40, 16) == UuidBytes(sb.volume_uuid));
  CHECK(At(slot, 56, 16) == UuidBytes(TestUuid(4)));
  V name(64, 0);
  std::copy_n("vol0", 4, name.begin());
  CHECK(At(slot, 72, 64) == name);
  CHECK(At(slot, 136, 4) == V{0, 0, 0, 3});
  CHECK(At(slot, 140, 4) == V{0, 0, 0, 6});
  CHECK(At(slot, 144, 4) == V{4, 3, 2, 0});  // raid10, blake2b-keyed, dirty, reserved
  CHECK(At(slot, 148, 4) == V{0, 0, 0x20, 0});
  CHECK(At(slot, 152, 8) == V{0, 0, 0, 0, 0, 2, 0, 0});        // 128 KiB
  CHECK(At(slot, 160, 8) == V{0, 0, 0, 0, 0, 0x80, 0, 0});     // 8 MiB
  CHECK(At(slot, 168, 8) == V{0, 0, 0, 0, 4, 0, 0, 0});        // 64 MiB
  CHECK(At(slot, 176, 8) == V{0, 0, 0, 0, 0x0b, 0xd0, 0, 0});  // 3 sets x 63 MiB = 189 MiB
  CHECK(At(slot, 184, 16) == V{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0});
  CHECK(At(slot, 200, 16) == V{0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x10, 0});
  // The table follows the missed-write map: 16 KiB.
  CHECK(At(slot, 216, 16) == V{0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 4, 0, 0});
  CHECK(At(slot, 232, 16) == V{0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x03, 0xf0, 0, 0});
  CHECK(At(slot, 248, 8) == V(8, 0));
  CHECK(At(slot, 256, 32) == V(sb.key_id.begin(), sb.key_id.end()));
  CHECK(At(slot, 288, 8) == V{1, 4, 1, 5, 6, 7, 0, 0});  // the states 4 to 7 are version 2's
  CHECK(At(slot, 296, 56) == V(56, 0));

  // Version 2's own fields.
  CHECK(At(slot, 352, 1) == V{2});  // copies
  CHECK(At(slot, 353, 7) == V(7, 0));
  CHECK(At(slot, 360, 16) == UuidBytes(TestUuid(0xc)));  // generation
  CHECK(At(slot, 376, 16) == UuidBytes(TestUuid(0xd)));  // history, newest first
  CHECK(At(slot, 392, 16) == UuidBytes(TestUuid(0xe)));
  CHECK(At(slot, 408, 8) == V{1, 2, 3, 4, 5, 6, 7, 0});              // map epoch
  CHECK(At(slot, 416, 8) == V{0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff});  // ownership epoch
  CHECK(At(slot, 424, 16) == UuidBytes(TestUuid(0xf)));              // owner
  // The missed-write map area: {12 KiB, 4 KiB}, right after the bitmap.
  CHECK(At(slot, 440, 16) == V{0, 0, 0, 0, 0, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0x10, 0});
  CHECK(At(slot, 456, 8) == V{1, 2, 3, 0, 1, 0, 0, 0});  // slot flags
  CHECK(At(slot, 464, 56) == V(56, 0));
  const V stale_since[] = {BE64(0),   BE64(0x0102030405060701), BE64(0), BE64(0x11), BE64(0x12),
                           BE64(0x13)};
  const V cursor[] = {BE64(0), BE64(0), BE64(0), BE64(1000), BE64(0), BE64(7)};
  for (size_t i = 0; i < 6; ++i) {
    CAPTURE(i);
    CHECK(At(slot, 520 + 8 * i, 8) == stale_since[i]);
    CHECK(At(slot, 1032 + 8 * i, 8) == cursor[i]);
    CHECK(At(slot, 1544 + 16 * i, 16) == UuidBytes(TestUuid(static_cast<uint8_t>(i + 1))));
  }
  CHECK(At(slot, 520 + 48, 512 - 48) == V(512 - 48, 0));
  CHECK(At(slot, 1032 + 48, 512 - 48) == V(512 - 48, 0));
  CHECK(At(slot, 1544 + 96, 1024 - 96) == V(1024 - 96, 0));
  // The scrub: repair, paused, last result errors.
  CHECK(At(slot, 2568, 8) == V{2, 1, 2, 0, 0, 0, 0, 0});
  CHECK(At(slot, 2576, 8) == BE64(0x1234));      // cursor
  CHECK(At(slot, 2584, 8) == BE64(0x0a0b));      // errors
  CHECK(At(slot, 2592, 8) == BE64(0x6553f100));  // last completed
  CHECK(offsets::kEndV2 == 2600);
  CHECK(At(slot, 2600, kSlotSize - 2600) == V(kSlotSize - 2600, 0));
}

TEST_CASE("superblock v2: version 1 slots read and write exactly as before") {
  const Superblock v1 = TestMember(1, 3, LayoutKind::kStripe);
  const Slot slot = MustEncode(v1);
  CHECK(MustEncode(MustDecode(slot)) == slot);  // byte for byte
  const Superblock decoded = MustDecode(slot);
  CHECK(decoded.version == 1);
  CHECK(decoded.copies == 1);
  CHECK(decoded.geometry.missed_writes == Area{});
  CHECK(At(slot, offsets::kEndV1, kSlotSize - offsets::kEndV1) ==
        V(kSlotSize - offsets::kEndV1, 0));

  SUBCASE("bytes where version 2 fields would be are ignored") {
    Slot dirty = slot;
    for (size_t i = offsets::kEndV1; i < kSlotSize; ++i)
      dirty[i] = static_cast<uint8_t>(i * 7 + 1);
    Reseal(dirty);
    CHECK(MustDecode(dirty) == v1);
    CHECK(MustEncode(MustDecode(dirty)) == slot);
  }
  SUBCASE("version 2's states are not version 1's") {
    Slot stale = slot;
    PatchBE(stale, offsets::kMemberStates + 1, 4, 1);
    Reseal(stale);
    Superblock sb;
    const Status status = Decode(stale, &sb);
    CHECK(status.err() == EINVAL);
    CHECK(status.message() == "member 1 has invalid state 4");
  }
  SUBCASE("version 1 cannot hold mirror or raid10") {
    Slot mirror = slot;
    PatchBE(mirror, offsets::kLayout, 3, 1);
    PatchBE(mirror, offsets::kChunkSize, 0, 8);
    Reseal(mirror);
    Superblock sb;
    CHECK(Decode(mirror, &sb).message() == "layout mirror needs format version 2, not 1");
  }
}

TEST_CASE("superblock v2: Encode refuses version 1 with version 2 fields set") {
  auto refused = [](const Superblock& sb, const char* text) {
    Slot slot{};
    const Status status = Encode(sb, slot);
    CHECK(status.err() == EINVAL);
    CHECK_MESSAGE(status.message().find(text) != std::string::npos, status.message());
    CHECK(slot == Slot{});
  };
  const char* kFields = "version 1 superblock has version 2 fields set";
  Superblock sb = TestMember(0, 2);
  sb.copies = 2;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.generation = TestUuid(3);
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.history[1] = TestUuid(3);
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.map_epoch = 1;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.ownership_epoch = 1;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.owner_uuid = TestUuid(3);
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.slot_flags[1] = 1;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.stale_since[0] = 1;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.cursor[0] = 1;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.slot_members[0] = sb.member_uuid;
  refused(sb, kFields);
  sb = TestMember(0, 2);
  sb.geometry.missed_writes = {sb.geometry.bitmap.end(), sb.geometry.bitmap.size};
  refused(sb, "version 1 has no missed-write map area");
  sb = TestMember(0, 2);
  sb.member_states[1] = MemberState::kStale;
  refused(sb, "member 1 has invalid state 4");
}

TEST_CASE("superblock v2: Decode names what is wrong") {
  const Slot mirror = MustEncode(TestRedundantMember(1, 2, 2));
  const Slot raid10 = MustEncode(TestRedundantMember(1, 4, 2, LayoutKind::kRaid10));
  auto refused = [](const Slot& base, std::initializer_list<std::pair<size_t, uint64_t>> patches,
                    size_t width, const std::string& text) {
    Slot slot = base;
    for (const auto& [offset, value] : patches)
      PatchBE(slot, offset, value, width);
    Reseal(slot);
    Superblock sb;
    const Status status = Decode(slot, &sb);
    CHECK(status.err() == EINVAL);
    CHECK_MESSAGE(status.message().find(text) != std::string::npos, status.message());
  };
  namespace o = offsets;

  SUBCASE("the layout is version 2's and the copies fit the members") {
    refused(mirror, {{o::kLayout, 1}}, 1, "layout linear is written in format version 1, not 2");
    refused(mirror, {{o::kLayout, 2}}, 1, "layout stripe is written in format version 1, not 2");
    refused(mirror, {{o::kCopies, 1}}, 1, "a mirror volume keeps at least 2 copies, not 1");
    refused(mirror, {{o::kCopies, 0}}, 1, "keeps at least 2 copies, not 0");
    refused(mirror, {{o::kCopies, 3}}, 1, "a mirror of 3 copies has exactly 3 members, not 2");
    refused(raid10, {{o::kCopies, 3}}, 1, "raid10 with 3 copies needs a multiple of 3 members");
    refused(raid10, {{o::kCopies, 4}}, 1, "is a single set: use layout mirror");
    refused(mirror, {{o::kChunkSize, 64 * KiB}}, 8, "mirror volume has chunk size 64 KiB");
    refused(raid10, {{o::kChunkSize, 0}}, 8, "raid10 chunk size 0 B is not a power of two");
    refused(raid10, {{o::kChunkSize, 2048}}, 8, "raid10 chunk size 2 KiB");
  }
  SUBCASE("states 1 to 7, zero past the member count") {
    Superblock sb;
    for (uint64_t state = 1; state <= 7; ++state) {
      Slot slot = mirror;
      PatchBE(slot, o::kMemberStates, state, 1);
      Reseal(slot);
      CHECK_MESSAGE(Decode(slot, &sb).ok(), state);
      CHECK(sb.member_states[0] == static_cast<MemberState>(state));
    }
    refused(mirror, {{o::kMemberStates, 8}}, 1, "member 0 has invalid state 8");
    refused(mirror, {{o::kMemberStates + 2, 4}}, 1, "member 2 has invalid state 4");
  }
  SUBCASE("generation and history") {
    const Uuid g = TestUuid(0xc);
    refused(mirror, {{o::kGeneration, 0}, {o::kGeneration + 8, 0}}, 8, "generation UUID is zero");
    Slot slot = mirror;
    std::copy(g.begin(), g.end(), slot.begin() + o::kHistory);
    Reseal(slot);
    Superblock sb;
    CHECK(Decode(slot, &sb).message() == "history entry 0 is the current generation");
    slot = mirror;
    std::copy(g.begin(), g.end(), slot.begin() + o::kHistory + 16);
    slot[o::kHistory + 16] ^= 1;
    Reseal(slot);
    CHECK(Decode(slot, &sb).message() == "history entry 1 is set after an empty one");
    std::copy(slot.begin() + o::kHistory + 16, slot.begin() + o::kHistory + 32,
              slot.begin() + o::kHistory);
    Reseal(slot);
    CHECK(Decode(slot, &sb).message() == "history entry 1 repeats history entry 0");
    slot[o::kHistory] ^= 2;
    Reseal(slot);
    CHECK(Decode(slot, &sb).ok());
  }
  SUBCASE("epochs") {
    refused(mirror, {{o::kOwnershipEpoch, uint64_t{1} << 31}}, 8,
            "ownership epoch 2147483648 is not below 2^31");
    Slot slot = mirror;
    PatchBE(slot, o::kOwnershipEpoch, kMaxOwnershipEpoch, 8);
    Reseal(slot);
    Superblock sb;
    CHECK(Decode(slot, &sb).ok());
    refused(mirror, {{o::kMapEpoch, 3}}, 8, "map epoch 3 is after the superblock's event 2");
  }
  SUBCASE("the missed-write map: after the bitmap, before the table, the bitmap's size") {
    const MemberGeometry& g = TestRedundantMember(1, 2, 2).geometry;
    refused(mirror, {{o::kMissedWrites, g.bitmap.offset}}, 8,
            "overlaps or follows missed-write map");
    refused(mirror, {{o::kMissedWrites, g.table.offset}}, 8, "overlaps or follows table area");
    refused(mirror, {{o::kMissedWrites + 8, 0}}, 8, "is not the size of the bitmap area");
    refused(mirror, {{o::kMissedWrites + 8, UINT64_MAX - 5}}, 8, "beyond the member");
    // Moved off its page, with the table moved a page down to make room.
    refused(mirror,
            {{o::kMissedWrites, g.missed_writes.offset + 512}, {o::kTable, g.table.offset + 4096}},
            8, "missed-write map or table area is not aligned to 4 KiB pages");
  }
  SUBCASE("slots") {
    refused(mirror, {{o::kSlotFlags + 1, 4}}, 1, "slot 1 has unknown flags 4");
    refused(mirror, {{o::kStaleSince + 8, 1}}, 8, "slot 1 is active but stale since event 1");
    refused(mirror, {{o::kSlotMembers + 16, 0}, {o::kSlotMembers + 24, 0}}, 8,
            "slot 1 has no member UUID");
    refused(mirror, {{o::kSlotFlags + 2, 1}}, 1, "slot 2 is past the member count");
    refused(mirror, {{o::kCursor + 8 * 63, 1}}, 8, "slot 63 is past the member count");
    refused(mirror, {{o::kSlotMembers + 32, 1}}, 8, "slot 2 is past the member count");
    refused(mirror, {{o::kStaleSince + 16, 1}}, 8, "slot 2 is past the member count");

    // A copy holds the whole volume of a mirror, a set's share of a raid10.
    const Superblock m = TestRedundantMember(1, 2, 2);
    const uint64_t blocks = m.volume_size / 4096;
    Slot slot = mirror;
    PatchBE(slot, o::kCursor, blocks, 8);
    Reseal(slot);
    Superblock sb;
    CHECK(Decode(slot, &sb).ok());
    refused(mirror, {{o::kCursor, blocks + 1}}, 8,
            "slot 0 cursor " + std::to_string(blocks + 1) + " is beyond the " +
                std::to_string(blocks) + " blocks each copy holds");
    const uint64_t set_blocks =
        TestRedundantMember(1, 4, 2, LayoutKind::kRaid10).volume_size / 2 / 4096;
    refused(raid10, {{o::kCursor + 24, set_blocks + 1}}, 8,
            "slot 3 cursor " + std::to_string(set_blocks + 1) + " is beyond the " +
                std::to_string(set_blocks) + " blocks each copy holds");
  }
  SUBCASE("scrub") {
    refused(mirror, {{o::kScrubMode, 3}}, 1, "unknown scrub mode 3");
    refused(mirror, {{o::kScrubLastResult, 3}}, 1, "unknown scrub result 3");
    refused(mirror, {{o::kScrubMode, 1}, {o::kScrubFlags, 2}}, 1, "unknown scrub flags 2");
    refused(mirror, {{o::kScrubFlags, 1}}, 1,
            "no scrub under way, but a scrub cursor, errors or pause are set");
    refused(mirror, {{o::kScrubErrors, 1}}, 8,
            "no scrub under way, but a scrub cursor, errors or pause are set");
    const uint64_t blocks = TestRedundantMember(1, 2, 2).volume_size / 4096;
    Slot scrubbing = mirror;
    PatchBE(scrubbing, o::kScrubMode, 1, 1);
    refused(scrubbing, {{o::kScrubCursor, blocks + 1}}, 8,
            "scrub cursor " + std::to_string(blocks + 1) + " is beyond the " +
                std::to_string(blocks) + " blocks of the volume");
    refused(mirror, {{o::kScrubLastCompleted, 5}}, 8,
            "scrub last result and last completion disagree");
  }
  SUBCASE("slot owners: distinct, and this member owns its own slot") {
    Slot slot = mirror;
    std::copy(slot.begin() + o::kSlotMembers, slot.begin() + o::kSlotMembers + 16,
              slot.begin() + o::kSlotMembers + 16);
    Reseal(slot);
    Superblock sb;
    CHECK(Decode(slot, &sb).message() == "slots 0 and 1 have the same member UUID");
    refused(mirror, {{o::kSlotMembers + 16, 0x77}}, 1, "slot 1 does not name this member's UUID");
  }
}

TEST_CASE("superblock v2: ChooseSlot reads version 2 slots as version 1's") {
  Superblock sb = TestRedundantMember(0, 2, 2);
  sb.event = 6;
  const Slot six = MustEncode(sb);
  sb.event = 7;
  const Slot seven = MustEncode(sb);
  SlotChoice choice;
  REQUIRE(ChooseSlot(six, seven, &choice).ok());
  CHECK(choice.slot == 1);
  CHECK(choice.superblock == sb);
  Slot torn = seven;
  torn[offsets::kCursor] ^= 1;  // a torn write of a version 2 field
  REQUIRE(ChooseSlot(six, torn, &choice).ok());
  CHECK(choice.slot == 0);
  CHECK(choice.superblock.event == 6);
}

}  // namespace
}  // namespace dst::integrity::superblock_v2_test
