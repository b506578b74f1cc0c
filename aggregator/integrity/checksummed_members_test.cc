// The operator's member commands on a mirror or raid10 volume over in-memory members: fail,
// write-mostly and remove, what they change in the running sets and in the superblocks.
#include <cerrno>
#include <functional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/integrity/test_redundant_harness.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::checksummed_members_test {
namespace {

using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h
using Done = std::function<void(int err)>;

// Runs `command` and waits until the change it queued is durable; its result.
int Durable(Harness& h, const std::function<Status(Done)>& command, Status* answer = nullptr) {
  int durable = kPending;
  const Status s = command([&](int err) { durable = err; });
  if (answer) *answer = s;
  if (!s.ok()) return s.err();
  REQUIRE(h.Pump([&] { return durable != kPending; }));
  return durable;
}

TEST_CASE("member fail: a current copy is recorded failed durably and no longer written") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(8 * KiB, 1)) == 0);
  const Superblock before = h.OnDisk(0);
  CHECK(Durable(h, [&](Done d) { return h.vol->FailMember(1, std::move(d)); }) == 0);
  const Superblock sb = h.OnDisk(0);
  CHECK(sb.member_states[1] == MemberState::kFailed);
  CHECK(sb.stale_since[1] == sb.event);
  CHECK(sb.generation != before.generation);
  CHECK(h.Slot(1).state == "failed");
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"U_"});
  const size_t since = h.members[1]->log.size();
  CHECK(h.Write(16 * KiB, Pattern(8 * KiB, 2)) == 0);
  CHECK(h.Matches(0, 64 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(h.members[1]->log.size() == since);
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kFailed);
}

TEST_CASE("member fail: refused for the last current copy, a stale copy and a slot out of range") {
  Harness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.vol->FailMember(1).ok());
  REQUIRE(h.Pump([&] { return h.OnDisk(0).member_states[1] == MemberState::kFailed; }));
  Status s = h.vol->FailMember(0);
  CHECK(s.err() == EBUSY);
  CHECK(s.message() ==
        "slot 0 is the last current copy of set 0 of vol0: failing it would leave the set "
        "without its data");
  s = h.vol->FailMember(1);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "slot 1 of vol0 is not current (failed): only a current or catching-up copy can be failed");
  s = h.vol->FailMember(2);
  CHECK(s.err() == ERANGE);
  CHECK(s.message() == "volume vol0 has no slot 2 (slots 0 to 1)");
  CHECK(h.Slot(0).state == "active");
  REQUIRE(h.Close() == 0);
}

TEST_CASE("member fail: a copy catching up stops its rebuild and is recorded failed") {
  Harness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 1)) == 0);
  DemoteSlot1(h, 0);
  // A restart that rebuilds slot 1, its source reads held: the rebuild is under way.
  REQUIRE(h.Close() == 0);
  h.vol.reset();
  HoldDataReads(h, 0);
  REQUIRE(h.OpenCatchingUp(true) == 0);
  h.Pump();
  REQUIRE(h.Slot(1).state == "rebuilding");
  Status s = h.vol->RemoveMember(1);
  CHECK(s.err() == EBUSY);
  CHECK(s.message() ==
        "slot 1 of vol0 is catching up (rebuilding): fail it first (member fail), or wait for it "
        "to finish");
  test::StderrCapture log;
  CHECK(Durable(h, [&](Done d) { return h.vol->FailMember(1, std::move(d)); }) == 0);
  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  CHECK(log.Text().find("rebuilding vol0 slot 1: stopped: failed by the operator") !=
        std::string::npos);
  CHECK(h.Slot(1).state == "failed");
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"U_"});
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kFailed);
  CHECK(h.vol->RemoveMember(1).ok());
  REQUIRE(h.Close() == 0);
}

TEST_CASE("member fail: raid10 fails one copy of one set; the other set stays whole") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  CHECK(Durable(h, [&](Done d) { return h.vol->FailMember(2, std::move(d)); }) == 0);
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"UU", "_U"});
  CHECK(h.vol->FailMember(3).err() == EBUSY);
  CHECK(h.vol->FailMember(0).ok());
  REQUIRE(h.Close() == 0);
}

TEST_CASE("member set write-mostly: the flag is durable and the read choice avoids the copy") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 3)) == 0);
  CHECK(Durable(h, [&](Done d) { return h.vol->SetWriteMostly(0, true, std::move(d)); }) == 0);
  CHECK(h.OnDisk(0).slot_flags[0] == kSlotWriteMostly);
  CHECK(h.OnDisk(1).slot_flags[0] == kSlotWriteMostly);
  CHECK(h.Slot(0).write_mostly);
  for (uint64_t at = 0; at < 64 * KiB; at += 4 * KiB)
    CHECK(h.ServingCopy(0, at) == 1);
  CHECK(Durable(h, [&](Done d) { return h.vol->SetWriteMostly(0, false, std::move(d)); }) == 0);
  CHECK(h.OnDisk(1).slot_flags[0] == 0);
  CHECK_FALSE(h.Slot(0).write_mostly);
  REQUIRE(h.Close() == 0);
}

TEST_CASE("member remove: refused for a current copy; a failed copy becomes missing, new owner") {
  Harness h;
  REQUIRE(h.Open() == 0);
  Status s = h.vol->RemoveMember(1);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "slot 1 of vol0 is current: fail it first (member fail)");
  CHECK(Durable(h, [&](Done d) { return h.vol->FailMember(1, std::move(d)); }) == 0);
  CHECK(Durable(h, [&](Done d) { return h.vol->RemoveMember(1, std::move(d)); }) == 0);
  const Superblock sb = h.OnDisk(0);
  CHECK(sb.member_states[1] == MemberState::kMissing);
  CHECK(sb.slot_members[1] != Harness::MemberUuid(1));
  CHECK(sb.slot_members[1] != Uuid{});
  CHECK(sb.slot_flags[1] == 0);
  CHECK(h.Slot(1).state == "missing");
  CHECK(h.Slot(1).uri.empty());
  CHECK(h.Write(0, Pattern(8 * KiB, 4)) == 0);
  CHECK(h.Matches(0, 64 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(ValidateSuperblock(h.OnDisk(0)).ok());
}

}  // namespace
}  // namespace dst::integrity::checksummed_members_test
