#include "aggregator/integrity/assembly.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "aggregator/integrity/test_superblock.h"

namespace dst::integrity::assembly_test {
namespace {

using testing::TestMember;
using testing::TestRedundantMember;
using testing::TestUuid;
using volume::LayoutKind;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

MemberSuperblock Labelled(uint32_t index, uint32_t count, LayoutKind layout = LayoutKind::kLinear) {
  return {"nbd://node" + std::to_string(index) + "/disk", TestMember(index, count, layout)};
}

std::vector<uint32_t> Indexes(const std::vector<MemberSuperblock>& members) {
  std::vector<uint32_t> out;
  for (const auto& m : members)
    out.push_back(m.superblock.member_index);
  return out;
}

bool Contains(const Status& status, const std::string& text) {
  return status.message().find(text) != std::string::npos;
}

TEST_CASE("assembly: members given in the wrong order come back ordered by index") {
  for (LayoutKind layout : {LayoutKind::kLinear, LayoutKind::kStripe}) {
    std::vector<MemberSuperblock> out;
    const Status status = OrderMembers(
        {Labelled(2, 3, layout), Labelled(0, 3, layout), Labelled(1, 3, layout)}, &out);
    REQUIRE_MESSAGE(status.ok(), status.message());
    CHECK(Indexes(out) == std::vector<uint32_t>{0, 1, 2});
    CHECK(out[0].uri == "nbd://node0/disk");
  }
}

TEST_CASE("assembly: a member of another volume is refused, naming both") {
  MemberSuperblock stranger = Labelled(1, 2);
  stranger.superblock.volume_uuid = TestUuid(0xb);
  stranger.superblock.name = "other";
  std::vector<MemberSuperblock> out;
  const Status status = OrderMembers({Labelled(0, 2), stranger}, &out);
  CHECK(status.err() == EINVAL);
  CHECK(Contains(status, "nbd://node1/disk is a member of volume " + FormatUuid(TestUuid(0xb)) +
                             " (\"other\"), but nbd://node0/disk is a member of volume " +
                             FormatUuid(TestUuid(0xa))));
  CHECK(out.empty());
}

TEST_CASE("assembly: the same index or member twice is refused") {
  std::vector<MemberSuperblock> out;
  const Status same = OrderMembers({Labelled(0, 2), Labelled(1, 2), Labelled(1, 2)}, &out);
  CHECK(same.err() == EINVAL);
  CHECK(Contains(same, "are the same member (member UUID " + FormatUuid(TestUuid(2)) + ")"));

  MemberSuperblock clash = Labelled(1, 2);
  clash.superblock.member_uuid = TestUuid(9);
  clash.uri = "nbd://clone/disk";
  const Status both = OrderMembers({Labelled(0, 2), Labelled(1, 2), clash}, &out);
  CHECK(both.message() == "nbd://node1/disk and nbd://clone/disk are both member 1 of the volume");

  MemberSuperblock cloned = Labelled(1, 2);
  cloned.superblock.member_uuid = TestUuid(1);  // member 0's
  CHECK(Contains(OrderMembers({Labelled(0, 2), cloned}, &out), "are the same member"));
}

TEST_CASE("assembly: a missing member is named with the count expected") {
  std::vector<MemberSuperblock> out;
  const Status status = OrderMembers({Labelled(3, 4), Labelled(0, 4)}, &out);
  CHECK(status.err() == EINVAL);
  CHECK(status.message() ==
        "volume \"vol0\" has 4 members but 2 were given: missing member index 1, 2");
}

TEST_CASE("assembly: members that disagree on the volume's parameters are refused") {
  std::vector<MemberSuperblock> out;
  MemberSuperblock odd = Labelled(1, 2);
  auto refused = [&](const std::string& text) {
    const Status status = OrderMembers({Labelled(0, 2), odd}, &out);
    CHECK(status.err() == EINVAL);
    CHECK_MESSAGE(Contains(status, text), status.message());
    odd = Labelled(1, 2);
  };
  odd.superblock.member_count = 3;
  refused("nbd://node1/disk has member count 3 but nbd://node0/disk has 2");
  odd = Labelled(1, 2, LayoutKind::kStripe);
  refused("has layout stripe but nbd://node0/disk has linear");
  odd.superblock.geometry.params.block_size = 8192;
  refused("has block size 8 KiB but nbd://node0/disk has 4 KiB");
  odd.superblock.geometry.params.region_size = 8 << 20;
  refused("has region size 8 MiB");
  odd.superblock.geometry.params.algorithm = ChecksumAlgorithm::kBlake2b;
  refused("has checksum algorithm blake2b but nbd://node0/disk has crc32c");
  odd.superblock.key_id[0] = 1;
  refused("were created with different checksum keys");
  odd.superblock.volume_size += 4096;
  refused("has volume size");
}

TEST_CASE("assembly: the recorded volume size must match the members' data areas") {
  std::vector<MemberSuperblock> members = {Labelled(0, 2), Labelled(1, 2)};
  for (auto& m : members)
    m.superblock.volume_size += 4096;
  std::vector<MemberSuperblock> out;
  const Status status = OrderMembers(members, &out);
  CHECK(status.err() == EINVAL);
  CHECK(Contains(status, "but the superblocks record"));
  CHECK(OrderMembers({}, &out).err() == EINVAL);
}

// Member `index` of a freshly created mirror or raid10, as create writes it.
MemberSuperblock Redundant(uint32_t index, uint32_t count, uint32_t copies, LayoutKind layout) {
  return {"nbd://node" + std::to_string(index) + "/disk",
          TestRedundantMember(index, count, copies, layout)};
}

std::vector<MemberSuperblock> RedundantVolume(uint32_t count, uint32_t copies, LayoutKind layout) {
  std::vector<MemberSuperblock> members;
  for (uint32_t i = count; i-- > 0;)
    members.push_back(Redundant(i, count, copies, layout));
  return members;
}

TEST_CASE("assembly: the members of a new mirror or raid10 make one volume") {
  for (auto [count, copies, layout] :
       {std::tuple{2u, 2u, LayoutKind::kMirror}, std::tuple{3u, 3u, LayoutKind::kMirror},
        std::tuple{4u, 2u, LayoutKind::kRaid10}, std::tuple{6u, 3u, LayoutKind::kRaid10}}) {
    CAPTURE(count);
    std::vector<MemberSuperblock> out;
    const Status status = OrderMembers(RedundantVolume(count, copies, layout), &out);
    REQUIRE_MESSAGE(status.ok(), status.message());
    CHECK(out.size() == count);
    for (uint32_t i = 0; i < count; ++i)
      CHECK(out[i].superblock.member_index == i);
  }
}

TEST_CASE("assembly: what version 2 members may disagree on is left to the caller") {
  // The shape of a demotion: member 1 went stale, the others moved to a new generation.
  std::vector<MemberSuperblock> members = RedundantVolume(4, 2, LayoutKind::kRaid10);
  for (MemberSuperblock& m : members) {
    Superblock& sb = m.superblock;
    if (sb.member_index == 1) continue;
    sb.event = 9;
    sb.history[0] = sb.generation;
    sb.generation = TestUuid(0xd);
    sb.ownership_epoch = 3;
    sb.owner_uuid = TestUuid(0xe);
    sb.member_states[1] = MemberState::kStale;
    sb.stale_since[1] = 8;
    sb.slot_flags[3] = kSlotWriteMostly;
  }
  std::vector<MemberSuperblock> out;
  const Status status = OrderMembers(members, &out);
  CHECK_MESSAGE(status.ok(), status.message());
}

TEST_CASE("assembly: mirror and raid10 members that disagree on the volume are refused") {
  std::vector<MemberSuperblock> out;
  SUBCASE("copies") {
    std::vector<MemberSuperblock> members = RedundantVolume(4, 2, LayoutKind::kRaid10);
    members[1].superblock = TestRedundantMember(2, 4, 4, LayoutKind::kMirror);
    members[1].superblock.layout = LayoutKind::kRaid10;
    CHECK(OrderMembers(members, &out).message() ==
          "nbd://node2/disk has copies 4 but nbd://node3/disk has 2");
  }
  SUBCASE("a version 1 member among version 2 ones") {
    const Status status =
        OrderMembers({Redundant(0, 2, 2, LayoutKind::kMirror), Labelled(1, 2)}, &out);
    CHECK(status.message() == "nbd://node1/disk has layout linear but nbd://node0/disk has mirror");
  }
  SUBCASE("a mirror's size is its smallest copy's") {
    std::vector<MemberSuperblock> members = RedundantVolume(2, 2, LayoutKind::kMirror);
    for (MemberSuperblock& m : members)
      m.superblock.geometry.data.size -= 4096;
    const Status status = OrderMembers(members, &out);
    CHECK(Contains(status, "members' data areas make a volume of " +
                               std::to_string(members[1].superblock.volume_size - 4096) +
                               " bytes, but the superblocks record"));
  }
  SUBCASE("copies of one set with different areas") {
    std::vector<MemberSuperblock> members = RedundantVolume(4, 2, LayoutKind::kRaid10);
    for (MemberSuperblock& m : members)
      if (m.superblock.member_index == 3) m.superblock.geometry.data.size -= 4096;
    CHECK(OrderMembers(members, &out).message() ==
          "nbd://node3/disk and nbd://node2/disk are copies of one set but their areas differ");
  }
  SUBCASE("a raid10 set smaller than a chunk") {
    std::vector<MemberSuperblock> members = RedundantVolume(4, 2, LayoutKind::kRaid10);
    for (MemberSuperblock& m : members)
      if (m.superblock.member_index / 2 == 1) m.superblock.geometry.data.size = 4096;
    const Status status = OrderMembers(members, &out);
    CHECK(status.message() ==
          "members' data areas do not form the recorded layout: set 1 (members 2 to 3, 4 KiB) is "
          "smaller than one chunk (64 KiB)");
  }
  CHECK(out.empty());
}

TEST_CASE("assembly: the checksum key must be the one the volume was created with") {
  Superblock keyed = TestMember(0, 1);
  keyed.geometry.params.algorithm = ChecksumAlgorithm::kBlake2bKeyed;
  REQUIRE(KeyIdentity(Bytes("right key"), &keyed.key_id).ok());
  CHECK(CheckChecksumKey(keyed, Bytes("right key")).ok());
  CHECK(Contains(CheckChecksumKey(keyed, Bytes("wrong key")), "wrong checksum key"));
  CHECK(Contains(CheckChecksumKey(keyed, {}), "a key is needed"));
  const Superblock plain = TestMember(0, 1);
  CHECK(CheckChecksumKey(plain, {}).ok());
  CHECK(Contains(CheckChecksumKey(plain, Bytes("key")), "uses crc32c, not keyed"));
}

TEST_CASE("uuid: format and parse") {
  const Uuid uuid = TestUuid(0xa);
  CHECK(FormatUuid(uuid) == "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
  CHECK(ParseUuid("a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf") == uuid);
  CHECK(ParseUuid("A0A1A2A3-A4A5-A6A7-A8A9-AAABACADAEAF") == uuid);
  CHECK(!ParseUuid(""));
  CHECK(!ParseUuid("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"));
  CHECK(!ParseUuid("a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeag"));
  CHECK(!ParseUuid("a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf0"));
  CHECK(!ParseUuid("a0a1a2a3+a4a5-a6a7-a8a9-aaabacadaeaf"));
}

TEST_CASE("uuid: NewUuid is random, version 4, RFC 4122 variant") {
  std::set<Uuid> seen;
  for (int i = 0; i < 100; ++i) {
    const Uuid uuid = NewUuid();
    CHECK((uuid[6] & 0xf0) == 0x40);
    CHECK((uuid[8] & 0xc0) == 0x80);
    CHECK(FormatUuid(uuid)[14] == '4');
    CHECK(ParseUuid(FormatUuid(uuid)) == uuid);
    seen.insert(uuid);
  }
  CHECK(seen.size() == 100);
}

}  // namespace
}  // namespace dst::integrity::assembly_test
