// A new member for a slot of a mirror or raid10 volume that is out (`member add`;
// docs/redundancy.md, "Member commands"), on in-memory members: the slot it fills, the superblock
// it is formatted with, the full rebuild it gets and the refusals that change nothing.
#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/integrity/test_redundant_harness.h"
#include "aggregator/integrity/test_superblock.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::checksummed_add_test {
namespace {

using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h

constexpr uint64_t kRegion = 64 * KiB;
constexpr uint64_t kMemberSize = 2 * MiB;

// A blank export of `size` bytes, kept by the harness so that it outlives the volume. Its index
// in h.members.
uint32_t BlankMember(Harness& h, const std::string& name, uint64_t size = kMemberSize) {
  h.members.push_back(std::make_unique<MemMember>(h.io, &h.clock, name, size, MemberCaps()));
  return static_cast<uint32_t>(h.members.size() - 1);
}

// What WriteNewMember does to an export: everything zeroed, both superblock slots written.
void Format(Harness& h, uint32_t member, const Superblock& sb) {
  std::fill(h.members[member]->bytes.begin(), h.members[member]->bytes.end(), 0);
  WriteSuperblockSlots(sb, h.members[member]->bytes);
}

// The slot to fill and the superblock to format with, then the member formatted with it.
Superblock Prepare(Harness& h, uint32_t member, std::optional<uint32_t> want, uint32_t* slot) {
  REQUIRE(h.vol->SlotToFill(want, slot).ok());
  Superblock sb;
  const Status s = h.vol->NewMemberSuperblock(*slot, h.members[member]->name(),
                                              h.members[member]->bytes.size(), &sb);
  REQUIRE_MESSAGE(s.ok(), s.message());
  Format(h, member, sb);
  return sb;
}

// AdoptMember and its answer, which must not come from inside the call.
Status Adopt(Harness& h, uint32_t slot, uint32_t member, const Superblock& its) {
  std::optional<Status> answer;
  h.vol->AdoptMember(slot, h.members[member].get(), its, [&](Status s) { answer = s; });
  CHECK_FALSE(answer.has_value());
  REQUIRE(h.Pump([&] { return answer.has_value(); }));
  return *answer;
}

TEST_CASE("add: a new member fills a stale slot and is rebuilt in full; a restart takes it") {
  Harness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(8 * KiB, 1)) == 0);
  DemoteSlot1(h, 16 * KiB);
  REQUIRE(h.Write(5 * kRegion, Pattern(4096, 2)) == 0);
  const uint32_t fresh = BlankMember(h, "mem-new");
  uint32_t slot = 99;
  const Superblock sb = Prepare(h, fresh, std::nullopt, &slot);
  CHECK(slot == 1);
  CHECK(sb.member_index == 1);
  CHECK(sb.member_uuid != Harness::MemberUuid(1));
  CHECK(sb.slot_members[1] == sb.member_uuid);
  CHECK(sb.slot_members[0] == Harness::MemberUuid(0));
  CHECK(sb.member_states[1] == MemberState::kRebuilding);
  CHECK(sb.member_states[0] == MemberState::kActive);

  test::StderrCapture log;
  HoldDataReads(h, 0);
  const Status s = Adopt(h, 1, fresh, h.OnDisk(fresh));
  REQUIRE_MESSAGE(s.ok(), s.message());
  CHECK(log.Text().find("volume vol0: slot 1 (stale) takes the new member mem-new (member ") !=
        std::string::npos);
  CHECK(
      log.Text().find("volume vol0: slot 1 mem-new: rebuilding (full: new member (member add))") !=
      std::string::npos);
  // Durable before the rebuild: the slot is the new member's, rebuilding.
  CHECK(h.OnDisk(0).slot_members[1] == sb.member_uuid);
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kRebuilding);
  CHECK(h.Slot(1).uri == "mem-new");
  CHECK(h.Slot(1).state == "rebuilding");
  CHECK(h.state.redundancy->set_health.at(0) == "UC");
  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Counter("rebuild_bytes") == 20 * KiB);  // the 5 blocks written
  CHECK(h.Slot(1).state == "active");
  CHECK(h.state.redundancy->set_health.at(0) == "UU");
  CHECK(SameArea(h, h.geometry.data, 0, fresh));
  CHECK(SameArea(h, h.geometry.table, 0, fresh));
  CHECK(h.OnDisk(fresh).member_uuid == sb.member_uuid);
  CHECK(h.OnDisk(fresh).member_states[1] == MemberState::kActive);
  REQUIRE(h.Write(9 * kRegion, Pattern(4096, 3)) == 0);
  CHECK(SameArea(h, h.geometry.data, 0, fresh));
  REQUIRE(h.Close() == 0);

  // A restart with member 0 and the new member: both current.
  REQUIRE(RestartWithNewMember(h, 1, fresh) == 0);
  CHECK(h.Slot(1).state == "active");
  CHECK(h.state.redundancy->set_health.at(0) == "UU");
  CHECK(h.Matches(0, 10 * kRegion));
  REQUIRE(h.Close() == 0);
}

TEST_CASE("add: failed and removed slots take a new member; --slot names one") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 4)) == 0);
  REQUIRE(h.vol->FailMember(1).ok());
  REQUIRE(h.vol->FailMember(3).ok());
  REQUIRE(h.Pump([&] { return h.OnDisk(0).member_states[3] == MemberState::kFailed; }));
  REQUIRE(h.vol->RemoveMember(3).ok());
  REQUIRE(h.Pump([&] { return h.OnDisk(0).member_states[3] == MemberState::kMissing; }));
  uint32_t slot = 0;
  REQUIRE(h.vol->SlotToFill(std::nullopt, &slot).ok());
  CHECK(slot == 1);
  const uint32_t fresh = BlankMember(h, "mem-new3");
  Prepare(h, fresh, 3, &slot);
  CHECK(slot == 3);
  REQUIRE(Adopt(h, 3, fresh, h.OnDisk(fresh)).ok());
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Slot(3).state == "active");
  CHECK(h.state.redundancy->set_health.at(1) == "UU");
  CHECK(SameArea(h, h.geometry.data, 2, fresh));
  // The failed slot 1 next: the lowest one left.
  REQUIRE(h.vol->SlotToFill(std::nullopt, &slot).ok());
  CHECK(slot == 1);
  const uint32_t fresh1 = BlankMember(h, "mem-new1");
  Prepare(h, fresh1, std::nullopt, &slot);
  REQUIRE(Adopt(h, 1, fresh1, h.OnDisk(fresh1)).ok());
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Slot(1).state == "active");
  CHECK(h.state.redundancy->set_health.at(0) == "UU");
  CHECK(SameArea(h, h.geometry.data, 0, fresh1));
  const Status none = h.vol->SlotToFill(std::nullopt, &slot);
  CHECK(none.err() == EBUSY);
  CHECK(none.message() == "volume vol0 has no slot to fill: every slot is current or catching up");
  REQUIRE(h.Close() == 0);
}

TEST_CASE("add: refusals change nothing") {
  Harness h;
  REQUIRE(h.Open() == 0);
  uint32_t slot = 0;
  Status s = h.vol->SlotToFill(std::nullopt, &slot);
  CHECK(s.err() == EBUSY);
  CHECK(s.message() == "volume vol0 has no slot to fill: every slot is current or catching up");
  s = h.vol->SlotToFill(0, &slot);
  CHECK(s.err() == EBUSY);
  CHECK(s.message() == "slot 0 of vol0 cannot take a new member: it is current (active)");
  CHECK(h.vol->SlotToFill(2, &slot).err() == ERANGE);
  DemoteSlot1(h, 0);

  // The wrong size.
  Superblock sb;
  s = h.vol->NewMemberSuperblock(1, "mem-big", 4 * MiB, &sb);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "mem-big has 4 MiB (4194304 bytes); slot 1 of vol0 needs exactly 2 MiB (2097152 bytes), "
        "the size of its member");

  // A superblock that is not a new member's: the old member's own, or one for another slot.
  const uint32_t fresh = BlankMember(h, "mem-new");
  const Superblock good = Prepare(h, fresh, 1, &slot);
  Superblock old = good;
  old.member_uuid = Harness::MemberUuid(1);
  old.slot_members[1] = old.member_uuid;
  s = Adopt(h, 1, fresh, old);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().find("already owns a slot: it is not new") != std::string::npos);
  Superblock other = good;
  other.member_index = 0;
  CHECK(Adopt(h, 1, fresh, other).err() == EINVAL);
  CHECK(Adopt(h, 0, fresh, good).err() == EBUSY);
  CHECK(h.members[fresh]->log.empty());
  CHECK(h.Slot(1).state == "stale");

  // Taken; a second member for the slot while the first is being added is refused.
  HoldDataReads(h, 0);
  std::optional<Status> first;
  h.vol->AdoptMember(1, h.members[fresh].get(), good, [&](Status a) { first = a; });
  const uint32_t second = BlankMember(h, "mem-second");
  s = Adopt(h, 1, second, good);
  CHECK(s.err() == EBUSY);
  CHECK(s.message() == "slot 1 of vol0 cannot take a new member: a member is already coming to it");
  REQUIRE(h.Pump([&] { return first.has_value(); }));
  REQUIRE(first->ok());
  CHECK(h.vol->ReturnableSlots().empty());
  CHECK(h.vol->SlotToFill(1, &slot).err() == EBUSY);
  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Slot(1).state == "active");
  REQUIRE(h.Close() == 0);
  CHECK(h.vol->SlotToFill(std::nullopt, &slot).err() == ESHUTDOWN);
}

TEST_CASE("add: a reserved slot takes no returning member and no other add until released") {
  Harness h;
  REQUIRE(h.Open() == 0);
  DemoteSlot1(h, 0);
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});
  uint32_t slot = 0;
  REQUIRE(h.vol->ReserveSlot(std::nullopt, &slot).ok());
  CHECK(slot == 1);
  CHECK(h.vol->ReturnableSlots().empty());
  Status s = h.vol->SlotToFill(std::nullopt, &slot);
  CHECK(s.err() == EBUSY);
  s = h.vol->SlotToFill(1, &slot);
  CHECK(s.message() ==
        "slot 1 of vol0 cannot take a new member: a new member is being added to it (member add)");
  // The old member answers again meanwhile: not taken back.
  h.members.push_back(
      std::make_unique<MemMember>(h.io, &h.clock, "mem1-back", kMemberSize, MemberCaps()));
  const uint32_t back = static_cast<uint32_t>(h.members.size() - 1);
  h.members[back]->bytes = h.members[1]->bytes;
  std::optional<Status> answer;
  h.vol->ReattachCopy(1, h.members[back].get(), h.OnDisk(back), [&](Status a) { answer = a; });
  REQUIRE(h.Pump([&] { return answer.has_value(); }));
  CHECK(answer->err() == EBUSY);
  CHECK(answer->message() ==
        "slot 1 of vol0 cannot take its member back: a new member is being added to it (member "
        "add)");
  h.vol->ReleaseSlot(1);
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});
  // AdoptMember ends a reservation too.
  REQUIRE(h.vol->ReserveSlot(1, &slot).ok());
  const uint32_t fresh = BlankMember(h, "mem-new");
  Superblock sb;
  REQUIRE(h.vol->NewMemberSuperblock(1, "mem-new", kMemberSize, &sb).ok());
  Format(h, fresh, sb);
  REQUIRE(Adopt(h, 1, fresh, h.OnDisk(fresh)).ok());
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Slot(1).state == "active");
  REQUIRE(h.Close() == 0);
}

}  // namespace
}  // namespace dst::integrity::checksummed_add_test
