// A member of a mirror or raid10 volume replaced while it serves (`member replace`;
// docs/redundancy.md, "Replace a member"), on in-memory members: the new member rebuilt beside the
// old one, which serves until the end; the slot handed over in one superblock update; and the
// replacement ending without the new member (it fails, the volume stops) with the old one intact.
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

namespace dst::integrity::checksummed_replace_test {
namespace {

using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h

constexpr uint64_t kRegion = 64 * KiB;
constexpr uint64_t kMemberSize = 4 * MiB;  // a volume of more than one rebuild step

Setup FourMiB() {
  return {.member_size = kMemberSize};
}

struct Ended {
  std::optional<Status> status;
  bool installed = false;
};

// A blank export, formatted as the new member of `slot` (what WriteNewMember does); its index in
// h.members.
uint32_t NewMember(Harness& h, uint32_t slot, const std::string& name) {
  h.members.push_back(std::make_unique<MemMember>(h.io, &h.clock, name, kMemberSize, MemberCaps()));
  const auto fresh = static_cast<uint32_t>(h.members.size() - 1);
  Superblock sb;
  const Status s = h.vol->NewMemberSuperblock(slot, name, kMemberSize, &sb);
  REQUIRE_MESSAGE(s.ok(), s.message());
  WriteSuperblockSlots(sb, h.members[fresh]->bytes);
  return fresh;
}

// The set's health as status shows it ("UU+C").
std::string Health(Harness& h, uint32_t set = 0) {
  h.state = h.vol->State();
  return h.state.redundancy->set_health.at(set);
}

// Reads of member m's data area from its second MiB on (the rebuild's second step) wait until
// StopHolding(): the rebuild stays under way while its first step, and client I/O below 1 MiB, go
// through.
constexpr uint64_t kHeldFrom = 1 * MiB;
constexpr uint64_t kHeldBlock = 17 * kRegion;  // a written block there, which the rebuild reads
void HoldSecondStep(Harness& h, uint32_t m) {
  const uint64_t from = h.geometry.data.offset + kHeldFrom;
  h.members[m]->hold = [from](const volume::MemberIo& io) {
    return io.op == volume::MemberOp::kRead && io.offset >= from;
  };
}

// AdoptReplacement and its start, which must not be answered from inside the call.
Status Adopt(Harness& h, uint32_t slot, uint32_t member, Ended* ended) {
  std::optional<Status> started;
  h.vol->AdoptReplacement(
      slot, h.members[member].get(), h.OnDisk(member), [&](Status s) { started = s; },
      [ended](Status s, bool installed) {
        ended->status = s;
        ended->installed = installed;
      });
  CHECK_FALSE(started.has_value());
  REQUIRE(h.Pump([&] { return started.has_value(); }));
  return *started;
}

// A replacement of slot 1 under way: two blocks written (one where the rebuild's second step
// reads, held), the new member formatted and adopted. Its index in h.members.
uint32_t StartReplacingSlot1(Harness& h, Ended* ended) {
  REQUIRE(h.Write(0, Pattern(8 * KiB, 1)) == 0);
  REQUIRE(h.Write(kHeldBlock, Pattern(4096, 5)) == 0);
  REQUIRE(h.vol->ReserveReplacement(1).ok());
  const uint32_t fresh = NewMember(h, 1, "mem-new");
  HoldSecondStep(h, 0);
  HoldSecondStep(h, 1);
  REQUIRE(Adopt(h, 1, fresh, ended).ok());
  return fresh;
}

TEST_CASE("replace: the new member is rebuilt beside the old, which serves until the end") {
  Harness h(FourMiB());
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(8 * KiB, 1)) == 0);
  REQUIRE(h.Write(5 * kRegion, Pattern(4096, 2)) == 0);
  REQUIRE(h.Write(kHeldBlock, Pattern(4096, 5)) == 0);
  REQUIRE(h.vol->ReserveReplacement(1).ok());
  const uint32_t fresh = NewMember(h, 1, "mem-new");
  const Uuid new_uuid = h.OnDisk(fresh).member_uuid;

  test::StderrCapture log;
  HoldSecondStep(h, 0);
  HoldSecondStep(h, 1);
  Ended ended;
  const Status s = Adopt(h, 1, fresh, &ended);
  REQUIRE_MESSAGE(s.ok(), s.message());
  CHECK(log.Text().find("volume vol0: slot 1: replacing mem1 by mem-new (member ") !=
        std::string::npos);
  h.Pump();
  // The old member is still the slot's, everywhere; the new one is written and not read.
  CHECK(Health(h) == "UU+C");
  CHECK(h.Slot(1).uri == "mem1");
  CHECK(h.Slot(1).state == "active");
  CHECK(h.OnDisk(0).slot_members[1] == Harness::MemberUuid(1));
  REQUIRE(h.Write(9 * kRegion, Pattern(4096, 3)) == 0);
  CHECK(h.Matches(0, 10 * kRegion));
  const size_t fresh_reads = h.members[fresh]->Count(MemberOp::kRead, h.geometry.data);
  CHECK(fresh_reads == 0);
  CHECK_FALSE(ended.status.has_value());

  h.members[0]->StopHolding();
  h.members[1]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  REQUIRE(ended.status.has_value());
  CHECK(ended.status->ok());
  CHECK(ended.installed);
  CHECK(log.Text().find("volume vol0: slot 1 replaced: mem1 by mem-new (set 0 now [UU])") !=
        std::string::npos);
  CHECK(h.Counter("rebuild_bytes") == 16 * KiB);  // the 4 blocks written before it began
  CHECK(h.Slot(1).uri == "mem-new");
  CHECK(h.Slot(1).state == "active");
  CHECK(Health(h) == "UU");
  CHECK(h.OnDisk(0).slot_members[1] == new_uuid);
  CHECK(h.OnDisk(fresh).member_states[1] == MemberState::kActive);
  CHECK(h.OnDisk(fresh).generation == h.OnDisk(0).generation);
  CHECK(SameArea(h, h.geometry.data, 0, fresh));
  CHECK(SameArea(h, h.geometry.table, 0, fresh));
  // The old member gets nothing more.
  const size_t old_log = h.members[1]->log.size();
  REQUIRE(h.Write(11 * kRegion, Pattern(4096, 4)) == 0);
  CHECK(h.members[1]->log.size() == old_log);
  CHECK(SameArea(h, h.geometry.data, 0, fresh));
  REQUIRE(h.Close() == 0);

  // A restart with member 0 and the new member: both current.
  REQUIRE(RestartWithNewMember(h, 1, fresh) == 0);
  CHECK(h.Slot(1).state == "active");
  CHECK(Health(h) == "UU");
  CHECK(h.Matches(0, 18 * kRegion));
  REQUIRE(h.Close() == 0);
}

TEST_CASE("replace: the old member demoted during the rebuild; the new one still takes the slot") {
  Harness h(FourMiB());
  REQUIRE(h.Open() == 0);
  Ended ended;
  const uint32_t fresh = StartReplacingSlot1(h, &ended);
  DemoteSlot1(h, 3 * kRegion);
  CHECK(Health(h) == "U_+C");
  // Nothing else may come to the slot meanwhile.
  uint32_t slot = 0;
  const Status busy = h.vol->SlotToFill(1, &slot);
  CHECK(busy.err() == EBUSY);
  CHECK(busy.message() ==
        "slot 1 of vol0 cannot take a new member: it is being replaced (member replace)");
  h.members[0]->StopHolding();
  h.members[1]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  REQUIRE(ended.status.has_value());
  CHECK(ended.installed);
  CHECK(h.Slot(1).uri == "mem-new");
  CHECK(h.Slot(1).state == "active");
  CHECK(Health(h) == "UU");
  CHECK(SameArea(h, h.geometry.data, 0, fresh));
  CHECK(h.Matches(0, 4 * kRegion));
  REQUIRE(h.Close() == 0);
}

TEST_CASE("replace: a new member that fails ends the replacement; the old one keeps serving") {
  Harness h(FourMiB());
  REQUIRE(h.Open() == 0);
  Ended ended;
  const uint32_t fresh = StartReplacingSlot1(h, &ended);
  test::StderrCapture log;
  h.members[fresh]->faults.push_back(
      {volume::MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  REQUIRE(h.Write(2 * kRegion, Pattern(4096, 2)) == 0);  // the client never sees it
  h.Pump();
  REQUIRE(ended.status.has_value());
  CHECK_FALSE(ended.installed);
  CHECK(ended.status->err() == EIO);
  CHECK(log.Text().find("volume vol0: replacing slot 1 by mem-new failed: mem-new: write") !=
        std::string::npos);
  CHECK(log.Text().find("; slot 1 keeps mem1") != std::string::npos);
  CHECK(Health(h) == "UU");
  CHECK(h.Slot(1).uri == "mem1");
  h.members[0]->StopHolding();
  h.members[1]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.OnDisk(0).slot_members[1] == Harness::MemberUuid(1));
  CHECK(h.OnDisk(1).member_states[1] == MemberState::kActive);
  CHECK(h.Matches(0, 3 * kRegion));
  // Another replacement may start now.
  CHECK(h.vol->ReserveReplacement(1).ok());
  h.vol->ReleaseReplacement(1);
  REQUIRE(h.Close() == 0);
}

TEST_CASE("replace: a volume that stops mid-replacement keeps the old member as the slot's") {
  Harness h(FourMiB());
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 1)) == 0);
  REQUIRE(h.Write(kHeldBlock, Pattern(4096, 5)) == 0);
  REQUIRE(h.vol->ReserveReplacement(0).ok());
  const uint32_t fresh = NewMember(h, 0, "mem-new");
  HoldSecondStep(h, 0);
  HoldSecondStep(h, 1);
  Ended ended;
  REQUIRE(Adopt(h, 0, fresh, &ended).ok());
  test::StderrCapture log;
  std::optional<int> closed;
  h.vol->Close([&](int err) { closed = err; });
  h.members[0]->StopHolding();
  h.members[1]->StopHolding();
  REQUIRE(h.Pump([&] { return closed.has_value() && ended.status.has_value(); }));
  CHECK(*closed == 0);
  CHECK_FALSE(ended.installed);
  CHECK(log.Text().find(
            "volume vol0: replacing slot 0 by mem-new failed: the volume is stopping; slot 0 "
            "keeps mem0") != std::string::npos);
  // The new export is refused at the next start: the superblocks name the old member.
  CHECK(h.OnDisk(1).slot_members[0] == Harness::MemberUuid(0));
  CHECK(h.OnDisk(fresh).slot_members[0] != Harness::MemberUuid(0));
  h.vol.reset();
  h.io.restart();
  h.io.poll();
  h.members.pop_back();
  REQUIRE(h.OpenCatchingUp() == 0);
  CHECK(Health(h) == "UU");
  CHECK(h.Matches(0, 18 * kRegion));
  REQUIRE(h.Close() == 0);
}

TEST_CASE("replace: refusals change nothing") {
  Harness h(FourMiB());
  REQUIRE(h.Open() == 0);
  CHECK(h.vol->ReserveReplacement(2).err() == ERANGE);
  REQUIRE(h.vol->ReserveReplacement(0).ok());
  Status s = h.vol->ReserveReplacement(1);
  CHECK(s.err() == EBUSY);
  CHECK(s.message() == "volume vol0: a replacement is under way (slot 0)");
  h.vol->ReleaseReplacement(0);
  DemoteSlot1(h, 0);
  s = h.vol->ReserveReplacement(1);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "slot 1 of vol0 is stale: nothing serves from it to keep; use member add");

  // Not reserved; then a superblock that is not a new member's of the slot.
  REQUIRE(h.vol->ReserveReplacement(0).ok());
  h.vol->ReleaseReplacement(0);
  const uint32_t fresh = NewMember(h, 0, "mem-new");
  Ended ended;
  CHECK(Adopt(h, 0, fresh, &ended).err() == EBUSY);
  REQUIRE(h.vol->ReserveReplacement(0).ok());
  Superblock other = h.OnDisk(fresh);
  other.member_index = 1;
  std::optional<Status> started;
  h.vol->AdoptReplacement(
      0, h.members[fresh].get(), other, [&](Status a) { started = a; },
      [&](Status, bool) { FAIL("a refused member ended a replacement"); });
  REQUIRE(h.Pump([&] { return started.has_value(); }));
  CHECK(started->err() == EINVAL);
  CHECK(h.members[fresh]->log.empty());
  // The reservation ended with the refusal.
  CHECK(h.vol->ReserveReplacement(0).ok());
  h.vol->ReleaseReplacement(0);
  CHECK(Health(h) == "U_");
  REQUIRE(h.Close() == 0);
}

}  // namespace
}  // namespace dst::integrity::checksummed_replace_test
