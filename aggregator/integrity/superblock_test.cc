#include "aggregator/integrity/superblock.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregator/integrity/test_superblock.h"

namespace dst::integrity::superblock_test {
namespace {

using testing::At;
using testing::ExpectedChecksum;
using testing::MustDecode;
using testing::MustEncode;
using testing::PatchBE;
using testing::Reseal;
using testing::Slot;
using testing::TestMember;
using testing::TestUuid;

constexpr uint64_t MiB = uint64_t{1} << 20;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Every field away from its default: a keyed, dirty, 7-member stripe with a 64-byte UTF-8 name.
Superblock FullSuperblock() {
  Superblock sb = TestMember(5, 7, volume::LayoutKind::kStripe);
  sb.event = 0x0102030405060708;
  sb.created = 1700000000;
  std::string name;
  for (int i = 0; i < 32; ++i)
    name += "\xc3\xa9";  // "é", two bytes
  sb.name = name;
  sb.state = VolumeState::kDirty;
  sb.chunk_size = 128 * 1024;
  const FormatParams params{8192, 8 * MiB, ChecksumAlgorithm::kBlake2bKeyed};
  REQUIRE(ComputeGeometry(testing::kTestMemberSize, params, &sb.geometry).ok());
  sb.volume_size = 7 * (sb.geometry.data.size / sb.chunk_size * sb.chunk_size);
  REQUIRE(KeyIdentity(Bytes("secret"), &sb.key_id).ok());
  sb.member_states[1] = MemberState::kFailed;
  sb.member_states[2] = MemberState::kMissing;
  return sb;
}

TEST_CASE("superblock: every field survives Encode and Decode") {
  const Superblock sb = FullSuperblock();
  CHECK(MustDecode(MustEncode(sb)) == sb);
  const Superblock plain = TestMember(0, 1);
  CHECK(MustDecode(MustEncode(plain)) == plain);
}

TEST_CASE("superblock: golden bytes at the offsets of docs/format.md") {
  const Superblock sb = FullSuperblock();
  const Slot slot = MustEncode(sb);
  using V = std::vector<uint8_t>;
  CHECK(At(slot, 0, 8) == V{'D', 'S', 'T', 'M', 'E', 'M', 'B', '1'});
  CHECK(At(slot, 8, 4) == V{0, 0, 0, 1});
  CHECK(At(slot, 12, 4) == V{0, 0, 0, 0});
  const uint32_t crc = ExpectedChecksum(slot);
  CHECK(At(slot, 16, 4) ==
        V{uint8_t(crc >> 24), uint8_t(crc >> 16), uint8_t(crc >> 8), uint8_t(crc)});
  CHECK(At(slot, 20, 4) == V{0, 0, 0, 0});
  CHECK(At(slot, 24, 8) == V{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(At(slot, 32, 8) == V{0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00});  // 1700000000
  CHECK(At(slot, 40, 16) == V(sb.volume_uuid.begin(), sb.volume_uuid.end()));
  CHECK(At(slot, 56, 16) == V(sb.member_uuid.begin(), sb.member_uuid.end()));
  CHECK(At(slot, 72, 64) == V(sb.name.begin(), sb.name.end()));
  CHECK(At(slot, 136, 4) == V{0, 0, 0, 5});
  CHECK(At(slot, 140, 4) == V{0, 0, 0, 7});
  CHECK(At(slot, 144, 4) == V{2, 3, 2, 0});  // stripe, blake2b-keyed, dirty, reserved
  CHECK(At(slot, 148, 4) == V{0, 0, 0x20, 0});
  CHECK(At(slot, 152, 8) == V{0, 0, 0, 0, 0, 2, 0, 0});        // 128 KiB
  CHECK(At(slot, 160, 8) == V{0, 0, 0, 0, 0, 0x80, 0, 0});     // 8 MiB
  CHECK(At(slot, 168, 8) == V{0, 0, 0, 0, 4, 0, 0, 0});        // 64 MiB
  CHECK(At(slot, 176, 8) == V{0, 0, 0, 0, 0x1b, 0x90, 0, 0});  // 7 x 63 MiB = 441 MiB
  CHECK(At(slot, 184, 16) == V{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0});  // {0, 8 KiB}
  CHECK(At(slot, 200, 16) == V{0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x10, 0});
  CHECK(At(slot, 216, 16) == V{0, 0, 0, 0, 0, 0, 0x30, 0, 0, 0, 0, 0, 0, 4, 0, 0});
  CHECK(At(slot, 232, 16) == V{0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x03, 0xf0, 0, 0});
  CHECK(At(slot, 248, 8) == V(8, 0));
  CHECK(At(slot, 256, 32) == V(sb.key_id.begin(), sb.key_id.end()));
  CHECK(At(slot, 288, 8) == V{1, 2, 3, 1, 1, 1, 1, 0});
  CHECK(At(slot, 296, 56) == V(56, 0));
  CHECK(At(slot, offsets::kEndV1, kSlotSize - offsets::kEndV1) ==
        V(kSlotSize - offsets::kEndV1, 0));
}

TEST_CASE("superblock: Decode names what is wrong") {
  const Slot good = MustEncode(TestMember(1, 3));
  Superblock sb;
  auto refused = [&](Slot slot, int err, const char* text) {
    const Status status = Decode(slot, &sb);
    CHECK(status.err() == err);
    CHECK_MESSAGE(status.message().find(text) != std::string::npos, status.message());
  };
  auto patched = [&](size_t offset, uint64_t value, size_t width) {
    Slot slot = good;
    PatchBE(slot, offset, value, width);
    Reseal(slot);
    return slot;
  };

  SUBCASE("no magic") {
    refused(Slot{}, ENOENT, "no dst superblock");
    refused(patched(offsets::kMagic, 0x4453544d454d4232, 8), ENOENT, "no dst superblock");
  }
  SUBCASE("torn: any byte flipped") {
    for (size_t offset : {size_t{8}, size_t{17}, size_t{30}, size_t{140}, size_t{4095}}) {
      Slot slot = good;
      slot[offset] ^= 0x10;
      refused(slot, EIO, "torn or corrupted");
    }
  }
  SUBCASE("unknown version or flags") {
    refused(patched(offsets::kVersion, 3, 4), ENOTSUP,
            "format version 3 is not supported (this dst reads versions 1 and 2)");
    refused(patched(offsets::kFlags, 4, 4), ENOTSUP, "unknown feature flags 4");
  }
  SUBCASE("wrong slot size") {
    CHECK(Decode(std::span<const uint8_t>(good.data(), 512), &sb).err() == EINVAL);
  }
  SUBCASE("members out of range") {
    refused(patched(offsets::kMemberIndex, 3, 4), EINVAL, "member index 3 is not below");
    refused(patched(offsets::kMemberCount, 0, 4), EINVAL, "member count 0");
    refused(patched(offsets::kMemberCount, 65, 4), EINVAL, "member count 65");
    refused(patched(offsets::kMemberStates + 1, 9, 1), EINVAL, "member 1 has invalid state 9");
    refused(patched(offsets::kMemberStates + 3, 1, 1), EINVAL, "member 3 has invalid state 1");
  }
  SUBCASE("codes") {
    refused(patched(offsets::kLayout, 7, 1), EINVAL, "unknown layout code 7");
    refused(patched(offsets::kAlgorithm, 0, 1), EINVAL, "unknown checksum algorithm code 0");
    refused(patched(offsets::kState, 0, 1), EINVAL, "unknown volume state 0");
  }
  SUBCASE("sizes") {
    refused(patched(offsets::kBlockSize, 1000, 4), EINVAL, "block size 1000 B");
    refused(patched(offsets::kRegionSize, 3 * MiB, 8), EINVAL, "region size 3 MiB");
    refused(patched(offsets::kChunkSize, 4096, 8), EINVAL, "linear volume has chunk size");
    refused(patched(offsets::kVolumeSize, 0, 8), EINVAL, "volume size");
    refused(patched(offsets::kVolumeSize, 4097, 8), EINVAL, "volume size");
  }
  SUBCASE("areas overlapping, misplaced or beyond the member") {
    const MemberGeometry& g = TestMember(1, 3).geometry;
    refused(patched(offsets::kTable, g.bitmap.offset, 8), EINVAL, "bitmap area");
    refused(patched(offsets::kData + 8, g.data.size + 4096, 8), EINVAL, "beyond the member");
    refused(patched(offsets::kData, UINT64_MAX - 100, 8), EINVAL, "beyond the member");
    Slot unaligned = patched(offsets::kData, g.data.offset + 4096, 8);
    PatchBE(unaligned, offsets::kData + 8, g.data.size - 4096, 8);
    Reseal(unaligned);
    refused(unaligned, EINVAL, "not aligned to 1 MiB");
    refused(patched(offsets::kSuperblocks + 8, 4096, 8), EINVAL, "superblock area");
    refused(patched(offsets::kTable + 8, 0, 8), EINVAL, "fewer entries");
    refused(patched(offsets::kMemberSize, g.data.end() - 1, 8), EINVAL, "beyond the member");
  }
  SUBCASE("name") {
    refused(patched(offsets::kName, 0, 1), EINVAL, "volume name contains a NUL byte");
    refused(patched(offsets::kName, 0, 4), EINVAL, "volume name must be 1 to 64 bytes");
    refused(patched(offsets::kName, 0x0a, 1), EINVAL, "not printable UTF-8");
    refused(patched(offsets::kName, 0xff, 1), EINVAL, "not printable UTF-8");
  }
  SUBCASE("key identity") {
    refused(patched(offsets::kKeyId, 1, 1), EINVAL, "checksums are not keyed");
    Superblock keyed = FullSuperblock();
    keyed.key_id = {};
    Slot slot;
    CHECK(Encode(keyed, slot).message().find("keyed checksums but no key identity") !=
          std::string::npos);
  }
}

TEST_CASE("superblock: Encode refuses what Decode would") {
  Slot slot{};
  Superblock sb = TestMember(0, 2);
  sb.member_index = 2;
  CHECK(Encode(sb, slot).err() == EINVAL);
  CHECK(slot == Slot{});
  sb = TestMember(0, 2);
  sb.name = std::string(65, 'x');
  CHECK(Encode(sb, slot).message().find("refusing to write superblock") != std::string::npos);
  sb.name = "vol0";
  sb.version = 3;
  CHECK(Encode(sb, slot).err() == ENOTSUP);
}

TEST_CASE("superblock: writes alternate between the slots") {
  CHECK(NextSlot(0) == 0);
  CHECK(NextSlot(1) == 1);
  CHECK(NextSlot(2) == 0);
  CHECK(NextSlot(UINT64_MAX) == 1);
  CHECK(SlotOffset(0) == 0);
  CHECK(SlotOffset(1) == 4096);
}

Slot WithEvent(uint64_t event) {
  Superblock sb = TestMember(0, 2);
  sb.event = event;
  return MustEncode(sb);
}

TEST_CASE("superblock: ChooseSlot takes the valid slot with the higher event") {
  SlotChoice choice;
  SUBCASE("higher event wins") {
    REQUIRE(ChooseSlot(WithEvent(4), WithEvent(5), &choice).ok());
    CHECK(choice.slot == 1);
    CHECK(choice.superblock.event == 5);
    REQUIRE(ChooseSlot(WithEvent(6), WithEvent(5), &choice).ok());
    CHECK(choice.slot == 0);
    CHECK(choice.superblock == MustDecode(WithEvent(6)));
  }
  SUBCASE("a torn slot: the other is used") {
    Slot torn = WithEvent(7);
    torn[100] ^= 1;
    REQUIRE(ChooseSlot(WithEvent(6), torn, &choice).ok());
    CHECK(choice.slot == 0);
    torn = WithEvent(8);
    torn[4000] ^= 0x80;
    REQUIRE(ChooseSlot(torn, WithEvent(7), &choice).ok());
    CHECK(choice.slot == 1);
  }
  SUBCASE("an event in the wrong slot is not trusted") {
    REQUIRE(ChooseSlot(WithEvent(9), WithEvent(5), &choice).ok());
    CHECK(choice.slot == 1);
  }
  SUBCASE("both torn: the error names both reasons") {
    Slot a = WithEvent(2), b = WithEvent(3);
    a[50] ^= 1;
    b[60] ^= 1;
    const Status status = ChooseSlot(a, b, &choice);
    CHECK(status.err() == EIO);
    CHECK(status.message() ==
          "no valid superblock: slot 0: superblock checksum mismatch: torn or corrupted; slot 1: "
          "superblock checksum mismatch: torn or corrupted");
  }
  SUBCASE("no superblock at all") {
    const Status status = ChooseSlot(Slot{}, Slot{}, &choice);
    CHECK(status.err() == ENOENT);
    CHECK(status.message().find("slot 1: no dst superblock") != std::string::npos);
  }
  SUBCASE("a slot from a newer format refuses, rather than roll back") {
    Slot newer = WithEvent(5);
    PatchBE(newer, offsets::kVersion, 3, 4);
    Reseal(newer);
    const Status status = ChooseSlot(WithEvent(4), newer, &choice);
    CHECK(status.err() == ENOTSUP);
    CHECK(status.message().find("slot 1: superblock format version 3") != std::string::npos);
  }
}

TEST_CASE("superblock: key identity identifies the key without being it") {
  KeyId a, a2, b;
  REQUIRE(KeyIdentity(Bytes("secret"), &a).ok());
  REQUIRE(KeyIdentity(Bytes("secret"), &a2).ok());
  REQUIRE(KeyIdentity(Bytes("secreT"), &b).ok());
  CHECK(a == a2);
  CHECK(a != b);
  // docs/format.md: keyed BLAKE2b-256 of the 33-byte ASCII string.
  Checksummer mac = std::move(
      *Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, Bytes("secret")).checksummer);
  const Digest expected = mac.Compute(Bytes("dst member format v1 key identity"));
  CHECK(std::equal(a.begin(), a.end(), expected.bytes.begin()));
  CHECK(a != KeyId{});
  CHECK(KeyIdentity({}, &a).err() == EINVAL);
}

TEST_CASE("superblock: state names") {
  CHECK(VolumeStateName(VolumeState::kDirty) == "dirty");
  CHECK(MemberStateName(MemberState::kMissing) == "missing");
  CHECK(MemberStateName(MemberState::kStale) == "stale");
  CHECK(MemberStateName(MemberState::kRebuilding) == "rebuilding");
  CHECK(MemberStateName(MemberState::kSpare) == "spare");
  CHECK(MemberStateName(MemberState::kResyncing) == "resyncing");
  CHECK(MemberStateName(static_cast<MemberState>(9)) == "unknown");
  CHECK(LayoutCode(volume::LayoutKind::kLinear) == 1);
  CHECK(LayoutCode(volume::LayoutKind::kStripe) == 2);
  CHECK(LayoutCode(volume::LayoutKind::kMirror) == 3);
  CHECK(LayoutCode(volume::LayoutKind::kRaid10) == 4);
  CHECK(TestUuid(1) != TestUuid(2));
}

}  // namespace
}  // namespace dst::integrity::superblock_test
