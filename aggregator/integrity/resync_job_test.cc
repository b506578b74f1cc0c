// ResyncJob (docs/redundancy.md, "Resync and rebuild") on in-memory members: a copy that was away
// gets exactly the regions it missed, a rebuilt copy exactly the written blocks, a block bad on
// every source is counted and skipped, and at the end the copy is current, its superblocks say
// active in a new generation and the missed-write maps are clear.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/integrity/test_redundant_harness.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::resync_job_test {
namespace {

using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h

constexpr uint64_t kRegion = 64 * KiB;

// Slot 1 away (missing) while `writes` are made, then the volume closed clean.
void WriteWithSlot1Away(Harness& h, const std::vector<uint64_t>& offsets) {
  REQUIRE(h.Open({1}) == 0);
  uint32_t seed = 1;
  for (uint64_t at : offsets)
    REQUIRE(h.Write(at, Pattern(4096, seed++)) == 0);
  REQUIRE(h.Close() == 0);
}

TEST_CASE("resync: a returning copy gets the regions it missed, and only those") {
  Harness h;
  // Three blocks in region 0, one in region 5.
  WriteWithSlot1Away(h, {0, 8192, 60 * KiB, 5 * kRegion + 4096});
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kMissing);
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  CHECK(h.Counter("resync_bytes") == 2 * kRegion);
  CHECK(h.Counter("rebuild_bytes") == 0);
  CHECK(h.Counter("resync_unrecoverable") == 0);
  CHECK(SameArea(h, h.geometry.data, 0, 1));
  CHECK(SameArea(h, h.geometry.table, 0, 1));
  CHECK(h.Slot(1).state == "active");
  CHECK(h.state.redundancy->set_health.at(0) == "UU");
  // The maps are clear on both copies and the superblocks say since when.
  CHECK(h.MissedBitsOnMember(0) == 0);
  CHECK(h.MissedBitsOnMember(1) == 0);
  const Superblock sb = h.OnDisk(1);
  CHECK(sb.member_states[1] == MemberState::kActive);
  CHECK(sb.map_epoch > 0);
  CHECK(sb.generation != h.OnDisk(0).history[1]);
  REQUIRE(h.Close() == 0);
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kActive);
  // Reads served by either copy see the data.
  REQUIRE(h.OpenCatchingUp() == 0);
  CHECK(h.Matches(0, 6 * kRegion));
}

TEST_CASE("resync: no write while away copies nothing") {
  Harness h;
  WriteWithSlot1Away(h, {});
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  CHECK(h.Counter("resync_bytes") == 0);
  CHECK(h.Slot(1).state == "active");
}

TEST_CASE("resync: without CatchUp the copy stays out") {
  Harness h;
  WriteWithSlot1Away(h, {0});
  REQUIRE(h.OpenCatchingUp(false, false) == 0);
  CHECK(h.vol->jobs().Status().empty());
  CHECK(h.Slot(1).state == "missing");
  CHECK(h.state.redundancy->set_health.at(0) == "U_");
}

TEST_CASE("rebuild: copies the written blocks only, and client writes meanwhile reach the copy") {
  Harness h;
  WriteWithSlot1Away(h, {0, 3 * kRegion, 3 * kRegion + 4096});
  test::StderrCapture log;
  REQUIRE(h.OpenCatchingUp(true) == 0);
  REQUIRE(h.RunJobs());
  CHECK(log.Text().find("rebuilding vol0 slot 1: done (12 KiB)") != std::string::npos);
  CHECK(h.Counter("rebuild_bytes") == 3 * 4096);
  CHECK(h.Counter("resync_bytes") == 0);
  CHECK(SameArea(h, h.geometry.data, 0, 1));
  CHECK(h.Slot(1).state == "active");
  REQUIRE(h.Write(7 * kRegion, Pattern(4096, 99)) == 0);
  CHECK(SameArea(h, h.geometry.data, 0, 1));
}

TEST_CASE("resync: a block bad on the only current copy is counted and skipped") {
  Harness h;
  WriteWithSlot1Away(h, {0, 4096});
  h.members[0]->bytes[h.geometry.data.offset + 4096 + 10] ^= 0xff;  // block 1 rots on slot 0
  test::StderrCapture log;
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  CHECK(h.Counter("resync_unrecoverable") == 1);
  CHECK(log.Text().find("volume offset 4096 (set 0, data offset 4096) fails verification") !=
        std::string::npos);
  CHECK(h.Counter("resync_bytes") == kRegion);
  CHECK(h.BlockOn(1, h.geometry.data.offset) == h.BlockOn(0, h.geometry.data.offset));
  CHECK(h.Slot(1).state == "active");
}

TEST_CASE("resync: a block bad on one source copy is read from another") {
  Harness h(Setup{.members = 3, .copies = 3});
  WriteWithSlot1Away(h, {0, 4096});
  // Slot 2 is the other current copy; rot block 1 on slot 0 only.
  h.members[0]->bytes[h.geometry.data.offset + 4096 + 10] ^= 0xff;
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  CHECK(h.Counter("resync_unrecoverable") == 0);
  CHECK(SameArea(h, h.geometry.data, 1, 2));
}

TEST_CASE("resync: a copy that fails a write while catching up is demoted; the job stops") {
  Harness h;
  WriteWithSlot1Away(h, {0, 3 * kRegion});
  h.members[1]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  test::StderrCapture log;
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  h.Pump();
  CHECK(log.Text().find("resyncing vol0 slot 1: stopped: Input/output error") != std::string::npos);
  CHECK(h.Slot(1).state == "stale");
  CHECK(h.state.redundancy->set_health.at(0) == "U_");
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kStale);
  CHECK(h.Counter("resync_bytes") == 0);
  CHECK(h.Matches(0, 4 * kRegion));
}

TEST_CASE("resync: a copy demoted under a write gets that write's region back") {
  Harness h;
  REQUIRE(h.Open() == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 1)) == 0);
  h.members[0]->faults.push_back({MemberOp::kWrite, 0, UINT64_MAX});
  REQUIRE(h.Write(0, Pattern(64 * KiB, 2)) == 0);
  h.Pump();
  CHECK(h.Slot(0).state == "stale");
  REQUIRE(h.Close() == 0);
  CHECK(h.MissedOnMember(1, 0));
  h.members[0]->faults.clear();
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  CHECK(h.Counter("resync_bytes") == kRegion);
  CHECK(SameArea(h, h.geometry.data, 0, 1));
}

TEST_CASE("raid10: each set's returning copy gets its own missed regions") {
  Harness h(Raid10());
  REQUIRE(h.Open({1, 3}) == 0);
  REQUIRE(h.Write(0, Pattern(64 * KiB, 7)) == 0);  // chunks of 8 KiB over both sets
  REQUIRE(h.Close() == 0);
  REQUIRE(h.OpenCatchingUp() == 0);
  REQUIRE(h.RunJobs());
  CHECK(h.Counter("resync_bytes") == 2 * kRegion);
  CHECK(SameArea(h, h.geometry.data, 0, 1));
  CHECK(SameArea(h, h.geometry.data, 2, 3));
  CHECK(h.MissedBitsOnMember(0) == 0);
  CHECK(h.MissedBitsOnMember(2) == 0);
}

}  // namespace
}  // namespace dst::integrity::resync_job_test
