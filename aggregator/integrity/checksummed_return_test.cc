// A member that comes back while a mirror or raid10 volume serves (docs/redundancy.md, "A member
// comes back"), on in-memory members: which slots may take a member back, the partial resync or
// full rebuild it gets, and the refusals that leave everything as it was.
#include <algorithm>
#include <cerrno>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/integrity/test_redundant_harness.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::checksummed_return_test {
namespace {

using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h

constexpr uint64_t kRegion = 64 * KiB;
constexpr uint64_t kMemberSize = 2 * MiB;

// A member that holds what member `from` holds (its export came back with the same disk), kept
// by the harness so that it outlives the volume. Its index in h.members.
uint32_t Returning(Harness& h, uint32_t from, const std::string& name,
                   volume::MemberCapabilities caps = MemberCaps(), uint64_t size = kMemberSize) {
  auto member = std::make_unique<MemMember>(h.io, &h.clock, name, size, caps);
  std::copy(h.members[from]->bytes.begin(), h.members[from]->bytes.begin() + size,
            member->bytes.begin());
  h.members.push_back(std::move(member));
  return static_cast<uint32_t>(h.members.size() - 1);
}

// ReattachCopy and its answer, which must not come from inside the call.
Status Reattach(Harness& h, uint32_t slot, uint32_t member, const Superblock& its) {
  std::optional<Status> answer;
  h.vol->ReattachCopy(slot, h.members[member].get(), its, [&](Status s) { answer = s; });
  CHECK_FALSE(answer.has_value());
  REQUIRE(h.Pump([&] { return answer.has_value(); }));
  return *answer;
}

TEST_CASE("return: a copy demoted while serving comes back and gets exactly what it missed") {
  Harness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(8 * KiB, 1)) == 0);
  DemoteSlot1(h, 16 * KiB);  // region 0, in flight as it failed
  // While it is out: regions 5 and 9.
  REQUIRE(h.Write(5 * kRegion + 4096, Pattern(4096, 2)) == 0);
  REQUIRE(h.Write(9 * kRegion, Pattern(12 * KiB, 3)) == 0);
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});

  const uint32_t back = Returning(h, 1, "mem1-back");
  const Superblock its = h.OnDisk(back);
  CHECK(its.event < h.OnDisk(0).event);
  const size_t old_log = h.members[1]->log.size();
  test::StderrCapture log;
  HoldDataReads(h, 0);
  const Status s = Reattach(h, 1, back, its);
  REQUIRE_MESSAGE(s.ok(), s.message());
  CHECK(log.Text().find("volume vol0: slot 1 mem1-back is back: marked-stale: ") !=
        std::string::npos);
  CHECK(log.Text().find("volume vol0: slot 1 mem1-back: resyncing (partial: 3 regions missed "
                        "since event ") != std::string::npos);
  // Status shows it as a start-time catch-up does.
  CHECK(h.Slot(1).state == "resyncing");
  CHECK(h.Slot(1).uri == "mem1-back");
  CHECK(h.state.redundancy->set_health.at(0) == "UC");
  REQUIRE(h.vol->JobStates().size() == 1);
  CHECK(h.vol->JobStates()[0].what == "resyncing vol0 slot 1");
  CHECK(h.vol->ReturnableSlots().empty());

  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Counter("resync_bytes") == 3 * kRegion);
  CHECK(h.Counter("rebuild_bytes") == 0);
  std::set<uint64_t> written;  // regions of the data area the job wrote on the member
  for (const auto& r : h.members[back]->Ops(MemberOp::kWrite, h.geometry.data))
    for (uint64_t at = r.offset; at < r.offset + r.length; at += 4096)
      written.insert((at - h.geometry.data.offset) / kRegion);
  CHECK(written == std::set<uint64_t>{0, 5, 9});
  CHECK(SameArea(h, h.geometry.data, 0, back));
  CHECK(SameArea(h, h.geometry.table, 0, back));
  CHECK(h.Slot(1).state == "active");
  CHECK(h.state.redundancy->set_health.at(0) == "UU");
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kActive);
  CHECK(h.OnDisk(back).member_states[1] == MemberState::kActive);
  CHECK(h.OnDisk(back).member_index == 1);
  CHECK(h.MissedBitsOnMember(0) == 0);
  // Writes reach it as a current copy; the old member hears nothing more.
  REQUIRE(h.Write(12 * kRegion, Pattern(4096, 4)) == 0);
  CHECK(SameArea(h, h.geometry.data, 0, back));
  CHECK(h.Matches(0, 13 * kRegion));
  REQUIRE(h.Close() == 0);
  CHECK(h.members[1]->log.size() == old_log);
  CHECK(h.OnDisk(back).state == VolumeState::kClean);
  CHECK(h.OnDisk(back).member_states[1] == MemberState::kActive);
}

TEST_CASE("return: a copy missing at start comes back while serving and is rebuilt in full") {
  Harness h;
  REQUIRE(h.Open({1}) == 0);
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});
  REQUIRE(h.Write(0, Pattern(8 * KiB, 5)) == 0);
  REQUIRE(h.Write(3 * kRegion, Pattern(4096, 6)) == 0);
  test::StderrCapture log;
  HoldDataReads(h, 0);
  // The harness's member 1 was never given to the volume: it comes back now.
  const Status s = Reattach(h, 1, 1, h.OnDisk(1));
  REQUIRE_MESSAGE(s.ok(), s.message());
  CHECK(log.Text().find("volume vol0: slot 1 mem1: rebuilding (full: marked-stale: ") !=
        std::string::npos);
  CHECK(h.Slot(1).state == "rebuilding");
  CHECK(h.Slot(1).uri == "mem1");
  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Counter("rebuild_bytes") == 3 * 4096);
  CHECK(SameArea(h, h.geometry.data, 0, 1));
  CHECK(h.Slot(1).state == "active");
  REQUIRE(h.Close() == 0);
  CHECK(h.OnDisk(1).member_states[1] == MemberState::kActive);
}

TEST_CASE("return: ReturnableSlots lists stale and missing slots, not current, failed or busy") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  CHECK(h.vol->ReturnableSlots().empty());
  DemoteSlot1(h, 0);
  REQUIRE(h.vol->FailMember(3).ok());
  REQUIRE(h.Pump([&] { return h.OnDisk(2).member_states[3] == MemberState::kFailed; }));
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});

  // A failed slot stays out until removed; then (missing) it may take a member back.
  const uint32_t back3 = Returning(h, 3, "mem3-back");
  Status s = Reattach(h, 3, back3, h.OnDisk(back3));
  CHECK(s.err() == EBUSY);
  CHECK(s.message() ==
        "slot 3 of vol0 cannot take its member back: it is failed: it stays out until removed "
        "(member remove) and replaced");
  REQUIRE(h.vol->RemoveMember(3).ok());
  REQUIRE(h.Pump([&] { return h.OnDisk(2).member_states[3] == MemberState::kMissing; }));
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1, 3});

  // Catching up: not returnable, neither while its intent bits are read nor during the job.
  const uint32_t back1 = Returning(h, 1, "mem1-back");
  HoldDataReads(h, 0);
  std::optional<Status> answer;
  h.vol->ReattachCopy(1, h.members[back1].get(), h.OnDisk(back1), [&](Status a) { answer = a; });
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{3});
  const Status remove = h.vol->RemoveMember(1);
  CHECK(remove.err() == EBUSY);
  CHECK(remove.message() == "slot 1 of vol0 is taking its member back: wait for it to catch up");
  REQUIRE(h.Pump([&] { return answer.has_value(); }));
  REQUIRE_MESSAGE(answer->ok(), answer->message());
  CHECK(h.Slot(1).state == "resyncing");
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{3});
  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.Slot(1).state == "active");
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{3});
  REQUIRE(h.Close() == 0);
  CHECK(h.vol->ReturnableSlots().empty());
}

TEST_CASE("return: a member that no longer owns its slot is refused; the slot stays out") {
  Harness h;
  REQUIRE(h.Open() == 0);
  DemoteSlot1(h, 0);
  REQUIRE(h.vol->RemoveMember(1).ok());
  REQUIRE(h.Pump([&] { return h.OnDisk(0).member_states[1] == MemberState::kMissing; }));
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});
  const uint32_t back = Returning(h, 1, "mem1-back");
  const Status s = Reattach(h, 1, back, h.OnDisk(back));
  CHECK(s.err() == EINVAL);
  CHECK_MESSAGE(s.message().find("slot 1 of vol0: mem1-back refused: not-owner: member ") == 0,
                s.message());
  CHECK(s.message().find(" does not own slot 1; ") != std::string::npos);
  CHECK(s.message().find("(a replaced member)") != std::string::npos);
  h.Pump();
  CHECK(h.members[back]->log.empty());
  CHECK(h.Slot(1).state == "missing");
  CHECK(h.Slot(1).uri.empty());
  CHECK(h.state.redundancy->set_health.at(0) == "U_");
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});
  REQUIRE(h.Write(0, Pattern(4096, 7)) == 0);
  CHECK(h.members[back]->log.empty());
  REQUIRE(h.Close() == 0);
}

TEST_CASE("return: a member that cannot take what the set promised is refused; nothing changes") {
  Harness h;
  REQUIRE(h.Open() == 0);
  DemoteSlot1(h, 0);
  const Superblock its = h.OnDisk(1);

  const uint32_t small = Returning(h, 1, "mem1-small", MemberCaps(), kMemberSize / 2);
  Status s = Reattach(h, 1, small, its);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "slot 1 of vol0: mem1-small refused: it has 1 MiB but was formatted with 2 MiB");

  volume::MemberCapabilities narrow = MemberCaps();
  narrow.max_request = 64 * KiB;
  const uint32_t slow = Returning(h, 1, "mem1-narrow", narrow);
  s = Reattach(h, 1, slow, its);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "slot 1 of vol0: mem1-narrow cannot be a copy of set 0 (mem0, mem1): it takes requests of "
        "up to 65536 bytes, the set 33554432");

  volume::MemberCapabilities no_trim = MemberCaps();
  no_trim.can_trim = false;
  const uint32_t plain = Returning(h, 1, "mem1-plain", no_trim);
  s = Reattach(h, 1, plain, its);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().find("it lacks trim, which the set has") != std::string::npos);

  h.Pump();
  for (uint32_t m : {small, slow, plain})
    CHECK(h.members[m]->log.empty());
  CHECK(h.Slot(1).state == "stale");
  CHECK(h.Slot(1).uri == "mem1");
  CHECK(h.vol->ReturnableSlots() == std::vector<uint32_t>{1});
  REQUIRE(h.Close() == 0);
}

TEST_CASE("return: a superblock of another slot, or not older than the volume's, is refused") {
  Harness h;
  REQUIRE(h.Open() == 0);
  DemoteSlot1(h, 0);
  const uint32_t back = Returning(h, 1, "mem1-back");
  Superblock its = h.OnDisk(back);
  its.member_index = 0;
  Status s = Reattach(h, 1, back, its);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "slot 1 of vol0: mem1-back refused: it holds slot 0");
  its = h.OnDisk(back);
  its.event = h.OnDisk(0).event;  // written since by someone else
  s = Reattach(h, 1, back, its);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().find("is not older than the volume's (ownership epoch ") != std::string::npos);
  its = h.OnDisk(back);
  its.volume_uuid = TestUuid(0x77);
  CHECK(Reattach(h, 1, back, its).err() == EINVAL);
  h.Pump();
  CHECK(h.members[back]->log.empty());
  CHECK(h.Slot(1).state == "stale");
  REQUIRE(h.Close() == 0);
}

TEST_CASE("return: a volume that starts stopping while a member comes back leaves it out") {
  Harness h;
  REQUIRE(h.Open() == 0);
  DemoteSlot1(h, 0);
  const uint32_t back = Returning(h, 1, "mem1-back");
  std::optional<Status> answer;
  h.vol->ReattachCopy(1, h.members[back].get(), h.OnDisk(back), [&](Status s) { answer = s; });
  int closed = kPending;
  h.vol->Close([&](int err) { closed = err; });
  REQUIRE(h.Pump([&] { return answer.has_value() && closed != kPending; }));
  CHECK(answer->err() == EIO);
  CHECK(answer->message() ==
        "slot 1 of vol0: mem1-back came back but stays out: the volume is stopping");
  CHECK(closed == 0);
  CHECK(h.OnDisk(0).state == VolumeState::kClean);
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kStale);
  CHECK(h.vol->jobs().Status().empty());
}

TEST_CASE("return: a second member for a slot already coming back is refused with EBUSY") {
  Harness h;
  REQUIRE(h.Open() == 0);
  DemoteSlot1(h, 0);
  const uint32_t first = Returning(h, 1, "mem1-first");
  const uint32_t second = Returning(h, 1, "mem1-second");
  HoldDataReads(h, 0);
  std::optional<Status> a, b;
  h.vol->ReattachCopy(1, h.members[first].get(), h.OnDisk(first), [&](Status s) { a = s; });
  h.vol->ReattachCopy(1, h.members[second].get(), h.OnDisk(second), [&](Status s) { b = s; });
  CHECK_FALSE(b.has_value());
  REQUIRE(h.Pump([&] { return a.has_value() && b.has_value(); }));
  CHECK_MESSAGE(a->ok(), a->message());
  CHECK(b->err() == EBUSY);
  CHECK(b->message() ==
        "slot 1 of vol0 cannot take its member back: a member is already coming to it");
  // While the first catches up.
  const Status c = Reattach(h, 1, second, h.OnDisk(second));
  CHECK(c.err() == EBUSY);
  CHECK(c.message() == "slot 1 of vol0 cannot take its member back: it is catching-up (resyncing)");
  // And the member commands' refusals.
  CHECK(Reattach(h, 2, second, h.OnDisk(second)).err() == ERANGE);
  CHECK(h.vol->RemoveMember(1).err() == EBUSY);
  h.members[0]->StopHolding();
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(h.members[second]->log.empty());
  CHECK(h.Slot(1).uri == "mem1-first");
  CHECK(h.Slot(1).state == "active");
  REQUIRE(h.Close() == 0);
  CHECK(Reattach(h, 1, second, h.OnDisk(second)).err() == ESHUTDOWN);
}

}  // namespace
}  // namespace dst::integrity::checksummed_return_test
