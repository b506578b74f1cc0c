// ChecksummedVolume over copies (mirror and raid10, docs/redundancy.md) against in-memory members
// (test_members.h): data, tables and bitmaps reach every copy; a copy that fails a write is
// demoted durably in the other copies' superblocks; a block that fails verification on one copy
// is served from another and repaired; superblocks are written per copy.
//
// Members are formatted as `create` formats them (format version 2, both superblock slots, zeroed
// metadata and data), and the volume is assembled from what their slots say, every present slot
// current unless a test says otherwise.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <asio.hpp>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/integrity/test_redundant_harness.h"
#include "aggregator/volume/member_io.h"
#include "aggregator/volume/set_geometry.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::redundant_volume_test {
namespace {

using volume::ByteRange;
using volume::CopyRole;
using volume::LayoutKind;
using volume::MemberOp;
using namespace testing;  // NOLINT(build/namespaces): the helpers of test_members.h

// ---------------------------------------------------------------------------
// Copies hold the same bytes.

TEST_CASE("mirror: writes reach both copies, read back, and the copies stay identical") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 1)) == 0);
  CHECK(h.Write(100 * KiB + 5, Pattern(10000, 2)) == 0);  // partial blocks: read-modify-write
  CHECK(h.Write(900 * KiB, Pattern(8 * KiB, 3)) == 0);
  CHECK(h.Matches(0, 1 * MiB - 64 * KiB));
  for (auto& m : h.members)
    CHECK(m->Count(MemberOp::kWrite, h.geometry.data) > 0);
  REQUIRE(h.Close() == 0);
  // Data, checksum tables and write-intent bitmaps: byte for byte.
  CHECK(h.SameAfterSuperblocks(0, 1));
  const auto state = h.vol->State();
  REQUIRE(state.redundancy.has_value());
  CHECK(state.layout == LayoutKind::kMirror);
  CHECK(state.redundancy->copies == 2);
  CHECK(state.redundancy->set_health == std::vector<std::string>{"UU"});
  CHECK(state.redundancy->slots.size() == 2);
  CHECK(state.redundancy->slots[1].uri == "mem1");
  CHECK(state.redundancy->slots[1].state == "active");
}

TEST_CASE("raid10: data is striped over the sets and each set's copies are identical") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(96 * KiB, 4)) == 0);  // many 8 KiB chunks: both sets
  CHECK(h.Write(300 * KiB + 100, Pattern(20000, 5)) == 0);
  CHECK(h.Matches(0, 512 * KiB));
  for (auto& m : h.members)
    CHECK(m->Count(MemberOp::kWrite, h.geometry.data) > 0);
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(0, 1));
  CHECK(h.SameAfterSuperblocks(2, 3));
  CHECK_FALSE(h.SameAfterSuperblocks(0, 2));  // the sets hold different chunks
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"UU", "UU"});
  // The volume reassembles from what the copies hold.
  h.vol.reset();
  REQUIRE(h.Open() == 0);
  CHECK(h.Matches(0, 512 * KiB));
}

// ---------------------------------------------------------------------------
// Superblocks per copy.

TEST_CASE("mirror: Open and Close write each copy's superblock with its own identity") {
  Harness h;
  REQUIRE(h.Open() == 0);
  for (uint32_t i = 0; i < 2; ++i) {
    CAPTURE(i);
    const Superblock sb = h.OnDisk(i);
    CHECK(sb.state == VolumeState::kDirty);
    CHECK(sb.member_index == i);
    CHECK(sb.member_uuid == Harness::MemberUuid(i));
    CHECK(sb.geometry.member_size == 2 * MiB);
    CHECK(sb.event == 2);
  }
  REQUIRE(h.Close() == 0);
  const Superblock a = h.OnDisk(0);
  const Superblock b = h.OnDisk(1);
  CHECK(a.state == VolumeState::kClean);
  CHECK(a.event == 3);
  CHECK(a.member_index == 0);
  CHECK(b.member_index == 1);
  CHECK(b.member_uuid == Harness::MemberUuid(1));
  // Apart from the identity, the same view of the volume.
  Superblock same = b;
  same.member_index = a.member_index;
  same.member_uuid = a.member_uuid;
  CHECK(same == a);
}

TEST_CASE("mirror: a close that waits says what for") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.vol->CloseProgress().rfind("not closing: 0 requests in flight", 0) == 0);
  h.members[1]->HoldAll();
  const std::vector<uint8_t> data = Pattern(4096, 3);
  int written = kPending;
  h.vol->Write(0, data.size(), data.data(), false, [&](int err) { written = err; });
  h.Pump();
  std::optional<int> closed;
  h.vol->Close([&](int err) { closed = err; });
  h.Pump();
  REQUIRE_FALSE(closed.has_value());
  const std::string progress = h.vol->CloseProgress();
  CHECK(progress.rfind("closing: 1 requests in flight (waited for), 0 background jobs", 0) == 0);
  CHECK(progress.find(", set 0 [UU]") != std::string::npos);
  h.members[1]->StopHolding();
  REQUIRE(h.Pump([&] { return closed.has_value(); }));
  CHECK(written == 0);
  CHECK(*closed == 0);
}

TEST_CASE("mirror: a missing copy serves degraded and its superblock is not written") {
  Harness h;
  REQUIRE(h.Open({1}) == 0);
  CHECK(h.Write(0, Pattern(32 * KiB, 6)) == 0);
  CHECK(h.Matches(0, 64 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(h.members[1]->log.empty());  // never touched
  CHECK(h.OnDisk(1).event == 1);     // as created
  const Superblock sb = h.OnDisk(0);
  CHECK(sb.member_states[1] == MemberState::kMissing);
  CHECK(sb.state == VolumeState::kClean);
  const auto state = h.vol->State();
  CHECK(state.redundancy->set_health == std::vector<std::string>{"U_"});
  CHECK(state.redundancy->slots[1].uri.empty());
  CHECK(state.redundancy->slots[1].state == "missing");
}

// ---------------------------------------------------------------------------
// Demotion.

TEST_CASE("mirror: a copy that fails a write is demoted durably; the client's write succeeds") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(8 * KiB, 7)) == 0);
  const Superblock before = h.OnDisk(0);
  h.members[1]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  CHECK(h.Write(16 * KiB, Pattern(8 * KiB, 8)) == 0);
  // Member 0's superblock records member 1 stale, under a new generation.
  const Superblock sb = h.OnDisk(0);
  CHECK(sb.event > before.event);
  CHECK(sb.member_states[1] == MemberState::kStale);
  CHECK(sb.member_states[0] == MemberState::kActive);
  CHECK(sb.stale_since[1] == sb.event);
  CHECK(sb.generation != before.generation);
  CHECK(sb.history[0] == before.generation);
  CHECK(sb.history[1] == before.history[0]);
  CHECK(h.Slot(1).state == "stale");
  CHECK(h.Slot(1).stale_since == sb.event);
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"U_"});
  // Later I/O leaves it alone: no write, no read, no superblock.
  const size_t since = h.members[1]->log.size();
  CHECK(h.Write(32 * KiB, Pattern(8 * KiB, 9)) == 0);
  CHECK(h.Matches(0, 64 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(h.members[1]->log.size() == since);
  CHECK(h.OnDisk(0).state == VolumeState::kClean);
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kStale);
}

TEST_CASE("raid10: a failing copy is demoted in its set only; the other set stays whole") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  h.members[3]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  CHECK(h.Write(0, Pattern(64 * KiB, 10)) == 0);
  CHECK(h.Matches(0, 64 * KiB));
  for (uint32_t i : {0u, 1u, 2u}) {
    CAPTURE(i);
    const Superblock sb = h.OnDisk(i);
    CHECK(sb.member_states[3] == MemberState::kStale);
    CHECK(sb.member_states[2] == MemberState::kActive);
    CHECK(sb.member_index == i);
  }
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"UU", "U_"});
}

TEST_CASE("raid10: copies failing in one write are demoted in one superblock update") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  const Superblock before = h.OnDisk(0);
  for (uint32_t i : {1u, 3u})
    h.members[i]->faults.push_back(
        {MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  CHECK(h.Write(0, Pattern(64 * KiB, 17)) == 0);  // both sets
  for (uint32_t i : {0u, 2u}) {
    CAPTURE(i);
    const Superblock sb = h.OnDisk(i);
    CHECK(sb.event == before.event + 1);  // one update for both
    CHECK(sb.member_states[1] == MemberState::kStale);
    CHECK(sb.member_states[3] == MemberState::kStale);
    CHECK(sb.stale_since[1] == sb.event);
    CHECK(sb.stale_since[3] == sb.event);
    CHECK(sb.history[0] == before.generation);  // one new generation
  }
  CHECK(h.OnDisk(0).generation == h.OnDisk(2).generation);
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"U_", "U_"});
  CHECK(h.Matches(0, 64 * KiB));
}

TEST_CASE("mirror: a copy whose superblock update fails is demoted; the update succeeds") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(8 * KiB, 18)) == 0);
  h.members[1]->faults.push_back({MemberOp::kWrite, 0, kSlotCount * kSlotSize});
  CHECK(h.Close() == 0);
  const Superblock sb = h.OnDisk(0);
  CHECK(sb.state == VolumeState::kClean);
  CHECK(sb.member_states[1] == MemberState::kStale);
  CHECK(h.OnDisk(1).state == VolumeState::kDirty);  // as Open left it
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"U_"});
}

TEST_CASE("mirror: the last current copy failing a superblock update fails the update") {
  Harness h;
  REQUIRE(h.Open({1}) == 0);
  h.members[0]->faults.push_back({MemberOp::kWrite, 0, kSlotCount * kSlotSize});
  CHECK(h.Close() == EIO);
  CHECK(h.OnDisk(0).state == VolumeState::kDirty);
  CHECK(h.OnDisk(0).member_states[0] == MemberState::kActive);
}

TEST_CASE("mirror: the last current copy failing a write gives the client EIO") {
  Harness h;
  REQUIRE(h.Open({1}) == 0);
  h.members[0]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  CHECK(h.Write(0, Pattern(8 * KiB, 11)) == EIO);
  CHECK(h.OnDisk(0).member_states[0] == MemberState::kActive);  // never demoted
  CHECK(h.vol->State().redundancy->set_health == std::vector<std::string>{"U_"});
}

TEST_CASE("mirror: while a demotion is not durable, writes to the set fail and reads work") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(8 * KiB, 70)) == 0);
  // Copy 1 fails its writes, and the update recording it stale cannot reach copy 0.
  h.members[1]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  h.members[0]->faults.push_back({MemberOp::kWrite, 0, kSlotCount * kSlotSize});
  CHECK(h.Write(16 * KiB, Pattern(8 * KiB, 71)) == EIO);
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kActive);  // what a restart would see
  // Nothing more reaches the data of the set: the superblocks still call copy 1 current.
  const size_t since = h.members[0]->log.size();
  CHECK(h.Write(32 * KiB, Pattern(8 * KiB, 72)) == EIO);
  CHECK(h.members[0]->Count(MemberOp::kWrite, h.geometry.data, since) == 0);
  CHECK(h.members[0]->Count(MemberOp::kWrite, {0, kSlotCount * kSlotSize}, since) == 1);  // retried
  CHECK(h.Matches(0, 8 * KiB));
  // Once the superblock can be written, the next write records the demotion and goes on.
  h.members[0]->faults.clear();
  CHECK(h.Write(48 * KiB, Pattern(8 * KiB, 73)) == 0);
  const Superblock sb = h.OnDisk(0);
  CHECK(sb.member_states[1] == MemberState::kStale);
  CHECK(sb.state == VolumeState::kDirty);
  CHECK(h.Matches(0, 8 * KiB));
  CHECK(h.Matches(48 * KiB, 8 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(h.OnDisk(0).state == VolumeState::kClean);
}

TEST_CASE(
    "mirror: superseded, changes fail with EROFS and reads with ESHUTDOWN; copies untouched") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(8 * KiB, 74)) == 0);
  dst::test::StderrCapture log;
  h.vol->Supersede(1);
  h.Pump();  // the newer owner's superblock is read for the log line
  CHECK(h.vol->superseded());
  CHECK(log.Text().find("volume " + h.vol->name() + ": fenced by a newer owner") !=
        std::string::npos);
  const size_t since0 = h.members[0]->log.size();
  const size_t since1 = h.members[1]->log.size();
  CHECK(h.Write(16 * KiB, Pattern(8 * KiB, 75)) == EROFS);
  CHECK(h.Read(0, 8 * KiB).err == ESHUTDOWN);
  int flushed = kPending, trimmed = kPending, cached = kPending, status = kPending;
  h.vol->Flush([&](int err) { flushed = err; });
  h.vol->Trim(0, 4 * KiB, false, [&](int err) { trimmed = err; });
  h.vol->Cache(0, 4 * KiB, [&](int err) { cached = err; });
  h.vol->BlockStatus(0, 4 * KiB,
                     [&](int err, std::vector<volume::AllocationExtent>) { status = err; });
  h.Pump();
  CHECK(flushed == EROFS);
  CHECK(trimmed == EROFS);
  CHECK(cached == ESHUTDOWN);
  CHECK(status == ESHUTDOWN);
  CHECK(h.members[0]->log.size() == since0);  // nothing reached the copies
  CHECK(h.members[1]->log.size() == since1);
}

TEST_CASE("mirror: a demotion's missed-write bits are on the remaining copy before its record") {
  Harness h;
  REQUIRE(h.Open() == 0);
  h.members[1]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  const size_t since = h.members[0]->log.size();
  CHECK(h.Write(5 * 64 * KiB, Pattern(8 * KiB, 74)) == 0);  // region 5: demotes copy 1
  CHECK(h.OnDisk(0).member_states[1] == MemberState::kStale);
  CHECK(h.MissedOnMember(0, 5));
  // On copy 0: the map page with region 5's bit written, then a flush, then the superblock.
  const auto superblocks = h.members[0]->Ops(MemberOp::kWrite, {0, kSlotCount * kSlotSize}, since);
  REQUIRE(superblocks.size() == 1);
  uint64_t map_written = 0;
  for (const auto& w : h.members[0]->Ops(MemberOp::kWrite, h.geometry.missed_writes, since))
    if (!w.written.empty() && (w.written[0] & 0x20) != 0 && map_written == 0)
      map_written = w.completed;
  REQUIRE(map_written != 0);
  CHECK(map_written < superblocks[0].submitted);
  bool flushed_between = false;
  for (const auto& f : h.members[0]->Ops(MemberOp::kFlush, {}, since))
    flushed_between =
        flushed_between || (f.submitted > map_written && f.completed < superblocks[0].submitted);
  CHECK(flushed_between);
  CHECK(h.Matches(5 * 64 * KiB, 8 * KiB));
}

// ---------------------------------------------------------------------------
// Self-heal.

TEST_CASE("mirror: a corrupted block on one copy is served from the other and repaired") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 12)) == 0);
  const uint64_t offset = 20 * KiB;
  const auto [set, at] = h.Locate(offset);
  const uint32_t bad = h.ServingCopy(set, offset);
  const uint32_t good = 1 - bad;
  h.members[h.MemberOf(set, bad)]->bytes[at + 100] ^= 0x5a;
  CHECK(h.Matches(offset, 4096));
  // The bad copy holds the good bytes again.
  CHECK(std::equal(h.members[bad]->bytes.begin() + at, h.members[bad]->bytes.begin() + at + 4096,
                   h.members[good]->bytes.begin() + at));
  CHECK(h.Slot(bad).repaired_blocks == 1);
  CHECK(h.Slot(bad).read_failovers == 1);
  CHECK(h.Slot(good).repaired_blocks == 0);
  CHECK(h.Counter("repaired_blocks") == 1);
  CHECK(h.Counter("read_failovers") == 1);
  CHECK(h.vol->counters().checksum_errors == 0);
  CHECK(h.Matches(0, 64 * KiB));
  CHECK(h.Counter("repaired_blocks") == 1);  // nothing else was bad
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(0, 1));
}

// With a worker pool the large read is verified on its threads; the block that fails is read
// from the other copy and repaired on the loop, as without one.
TEST_CASE("mirror: with workers, a large read serves a corrupted block from the other copy") {
  WorkerPool pool(2);
  Setup setup;
  setup.params.algorithm = ChecksumAlgorithm::kBlake2b;
  setup.workers = &pool;
  Harness h(setup);
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(256 * KiB, 13)) == 0);
  const uint64_t offset = 100 * KiB;
  const auto [set, at] = h.Locate(offset);
  const uint32_t bad = h.ServingCopy(set, offset);
  const uint32_t good = 1 - bad;
  h.members[h.MemberOf(set, bad)]->bytes[at + 7] ^= 0x21;
  CHECK(h.Matches(0, 256 * KiB));
  CHECK(std::equal(h.members[bad]->bytes.begin() + at, h.members[bad]->bytes.begin() + at + 4096,
                   h.members[good]->bytes.begin() + at));
  CHECK(h.Counter("repaired_blocks") == 1);
  CHECK(h.Counter("read_failovers") == 1);
  CHECK(h.vol->counters().checksum_errors == 0);
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(0, 1));
}

TEST_CASE("raid10: a corrupted block is repaired from its set's other copy") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 13)) == 0);
  const uint64_t offset = 8 * KiB;  // the second chunk: set 1
  const auto [set, at] = h.Locate(offset);
  REQUIRE(set == 1);
  const uint32_t bad = h.ServingCopy(set, offset);
  const uint32_t member = h.MemberOf(set, bad);
  h.members[member]->bytes[at] ^= 0xff;
  CHECK(h.Matches(offset, 4096));
  CHECK(h.Slot(member).repaired_blocks == 1);
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(2, 3));
}

TEST_CASE("mirror: a copy whose repair fails is demoted; the read still gets good data") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 19)) == 0);
  const uint64_t offset = 24 * KiB;
  const auto [set, at] = h.Locate(offset);
  const uint32_t bad = h.ServingCopy(set, offset);
  MemMember& member = *h.members[h.MemberOf(set, bad)];
  member.bytes[at + 7] ^= 0x80;
  member.faults.push_back({MemberOp::kWrite, at, at + 4096});
  CHECK(h.Matches(offset, 4096));
  CHECK(h.Slot(bad).repaired_blocks == 0);
  CHECK(h.Slot(bad).state == "stale");
  CHECK(h.OnDisk(1 - bad).member_states[bad] == MemberState::kStale);
  CHECK(h.Matches(0, 64 * KiB));  // from the other copy only
}

TEST_CASE("mirror: a block corrupted on both copies is EIO, naming both") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 14)) == 0);
  const auto [set, at] = h.Locate(12 * KiB);
  h.members[0]->bytes[at + 1] ^= 1;
  h.members[1]->bytes[at + 2] ^= 1;
  CHECK(h.Read(12 * KiB, 4096).err == EIO);
  CHECK(h.vol->counters().checksum_errors == 1);
  CHECK(h.Counter("repaired_blocks") == 0);
  CHECK(h.Matches(0, 12 * KiB));  // its neighbours are fine
  CHECK(h.Matches(16 * KiB, 48 * KiB));
  // Nothing was rewritten: the copies still differ where they were corrupted.
  CHECK(h.members[0]->bytes[at + 1] != h.members[1]->bytes[at + 1]);
}

TEST_CASE("mirror: a partial write over a corrupted block merges the good copy") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(16 * KiB, 15)) == 0);
  const auto [set, at] = h.Locate(4 * KiB);
  const uint32_t bad = h.ServingCopy(set, 4 * KiB);
  h.members[h.MemberOf(set, bad)]->bytes[at + 3000] ^= 0x10;
  CHECK(h.Write(4 * KiB + 10, Pattern(100, 16)) == 0);  // read-modify-write of that block
  CHECK(h.Matches(0, 16 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(0, 1));
}

// ---------------------------------------------------------------------------
// The missed-write map.

TEST_CASE("mirror: whole, writes set no missed-write bit") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(256 * KiB, 20)) == 0);
  REQUIRE(h.Close() == 0);
  CHECK(h.MissedBitsOnMember(0) == 0);
  CHECK(h.MissedBitsOnMember(1) == 0);
}

TEST_CASE("mirror: degraded, a write sets its region's missed-write bit with the intent bit") {
  Harness h;
  REQUIRE(h.Open({1}) == 0);
  const size_t since = h.members[0]->log.size();
  CHECK(h.Write(5 * 64 * KiB + 4 * KiB, Pattern(8 * KiB, 21)) == 0);  // region 5
  CHECK(h.MissedOnMember(0, 5));
  CHECK(h.MissedBitsOnMember(0) == 1);
  // One sync: the bitmap page and the map page, then one flush, before the data.
  const auto flushes = h.members[0]->Ops(MemberOp::kFlush, {}, since);
  REQUIRE(flushes.size() == 1);
  const auto bitmap = h.members[0]->Ops(MemberOp::kWrite, h.geometry.bitmap, since);
  const auto map = h.members[0]->Ops(MemberOp::kWrite, h.geometry.missed_writes, since);
  const auto data = h.members[0]->Ops(MemberOp::kWrite, h.geometry.data, since);
  REQUIRE(bitmap.size() == 1);
  REQUIRE(map.size() == 1);
  REQUIRE(data.size() == 1);
  CHECK(map[0].completed < flushes[0].submitted);
  CHECK(bitmap[0].completed < flushes[0].submitted);
  CHECK(flushes[0].completed < data[0].submitted);
  // Never cleared while degraded: not by the stop, which clears the intent bits.
  REQUIRE(h.Close() == 0);
  CHECK(h.MissedOnMember(0, 5));
  CHECK(h.vol->dirty_regions() == 0);
  h.vol.reset();
  REQUIRE(h.Open({1}) == 0);
  CHECK(h.Write(9 * 64 * KiB, Pattern(4 * KiB, 22)) == 0);
  REQUIRE(h.Close() == 0);
  CHECK(h.MissedOnMember(0, 5));  // loaded, and written back with the new bit
  CHECK(h.MissedOnMember(0, 9));
  CHECK(h.MissedBitsOnMember(0) == 2);
}

TEST_CASE("raid10: after a demotion, writes to that set set missed-write bits there only") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  h.members[1]->faults.push_back({MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  CHECK(h.Write(0, Pattern(4 * KiB, 23)) == 0);  // set 0, region 0: demotes member 1
  h.Pump();
  CHECK(h.MissedOnMember(0, 0));  // the region being written when the copy failed
  // Chunks alternate sets every 8 KiB: volume offset 128 KiB is set 0's region 1, the next chunk
  // is set 1's region 1.
  CHECK(h.Write(128 * KiB, Pattern(16 * KiB, 24)) == 0);
  CHECK(h.MissedOnMember(0, 1));
  CHECK(h.MissedBitsOnMember(0) == 2);
  CHECK(h.MissedBitsOnMember(1) == 0);  // the demoted copy is not written
  CHECK(h.MissedBitsOnMember(2) == 0);  // set 1 is whole
  CHECK(h.MissedBitsOnMember(3) == 0);
  CHECK(h.Matches(0, 256 * KiB));
}

// ---------------------------------------------------------------------------
// Table-entry repair.

TEST_CASE("mirror: a bad table entry on one copy is repaired from the other copy's table page") {
  // The table cache loads a page from the copy the set reads: corrupting each copy in turn
  // covers the cache holding the bad entry (repaired on the read) and the good one.
  bool cache_held_bad = false;
  bool cache_held_good = false;
  for (uint32_t corrupt : {0u, 1u}) {
    CAPTURE(corrupt);
    Harness h;
    REQUIRE(h.Open() == 0);
    const uint64_t offset = 40 * KiB;
    CHECK(h.Write(0, Pattern(64 * KiB, 60)) == 0);
    REQUIRE(h.Close() == 0);
    h.vol.reset();
    REQUIRE(h.Open() == 0);
    const auto [set, at] = h.Locate(offset);
    const TableEntryLocation entry =
        LocateTableEntry(h.geometry, (at - h.geometry.data.offset) / 4096);
    h.members[corrupt]->bytes[entry.member_offset + 1] ^= 0x20;
    const size_t since = h.members[corrupt]->log.size();
    CHECK(h.Matches(offset, 4096));
    const bool bad_cached = h.members[corrupt]->Count(MemberOp::kRead, h.geometry.table, since) > 0;
    if (bad_cached) {
      cache_held_bad = true;
      CHECK(h.Slot(corrupt).repaired_blocks == 1);
      CHECK(h.Slot(1 - corrupt).repaired_blocks == 0);
      CHECK(h.Counter("repaired_blocks") == 1);
      CHECK(h.vol->counters().checksum_errors == 0);
      // The table page on the bad copy holds the good entry again, before any stop.
      CHECK(std::equal(h.members[0]->bytes.begin() + entry.page_offset,
                       h.members[0]->bytes.begin() + entry.page_offset + 4096,
                       h.members[1]->bytes.begin() + entry.page_offset));
    } else {
      // The cache holds the good entry: reads never look at the bad one. It is overwritten when
      // the page is next written back whole (here by a write to a neighbouring block).
      cache_held_good = true;
      CHECK(h.Counter("repaired_blocks") == 0);
      CHECK(h.Write(offset + 4096, Pattern(4096, 61)) == 0);
    }
    CHECK(h.Matches(0, 64 * KiB));
    REQUIRE(h.Close() == 0);
    CHECK(h.SameAfterSuperblocks(0, 1));  // data and table, byte for byte
  }
  CHECK(cache_held_bad);
  CHECK(cache_held_good);
}

TEST_CASE("mirror: a copy with a bad entry and bad data is repaired from the other's pair") {
  // Interesting when the cache read the bad copy's page: neither copy's data verifies against the
  // cached entry. Corrupting each copy in turn makes that happen once.
  bool cache_held_bad = false;
  for (uint32_t corrupt : {0u, 1u}) {
    CAPTURE(corrupt);
    Harness h;
    REQUIRE(h.Open() == 0);
    CHECK(h.Write(0, Pattern(64 * KiB, 62)) == 0);
    REQUIRE(h.Close() == 0);
    h.vol.reset();
    REQUIRE(h.Open() == 0);
    const uint64_t offset = 12 * KiB;
    const auto [set, at] = h.Locate(offset);
    const TableEntryLocation entry =
        LocateTableEntry(h.geometry, (at - h.geometry.data.offset) / 4096);
    h.members[corrupt]->bytes[entry.member_offset] ^= 0x01;
    h.members[corrupt]->bytes[at + 99] ^= 0x01;
    const size_t since = h.members[corrupt]->log.size();
    CHECK(h.Matches(offset, 4096));
    const bool bad_cached = h.members[corrupt]->Count(MemberOp::kRead, h.geometry.table, since) > 0;
    if (bad_cached) {
      cache_held_bad = true;
      CHECK(h.Slot(corrupt).repaired_blocks == 1);  // counted once for data and entry
      CHECK(h.Slot(corrupt).read_failovers == 1);
      CHECK(h.Slot(1 - corrupt).repaired_blocks == 0);
    }
    CHECK(h.Matches(0, 64 * KiB));
    CHECK(h.Write(offset + 4096, Pattern(4096, 64)) == 0);  // the page is written back whole
    REQUIRE(h.Close() == 0);
    // With the good entry cached, the bad data is repaired only when a read lands on it.
    if (bad_cached) CHECK(h.SameAfterSuperblocks(0, 1));
  }
  CHECK(cache_held_bad);
}

TEST_CASE("mirror: a block whose entry is bad on both copies is EIO, that block only") {
  Harness h;
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 63)) == 0);
  REQUIRE(h.Close() == 0);
  h.vol.reset();
  REQUIRE(h.Open() == 0);
  const uint64_t offset = 28 * KiB;
  const auto [set, at] = h.Locate(offset);
  const TableEntryLocation entry =
      LocateTableEntry(h.geometry, (at - h.geometry.data.offset) / 4096);
  h.members[0]->bytes[entry.member_offset] ^= 0x01;
  h.members[1]->bytes[entry.member_offset + 2] ^= 0x08;
  CHECK(h.Read(offset, 4096).err == EIO);
  CHECK(h.vol->counters().checksum_errors == 1);
  CHECK(h.Counter("repaired_blocks") == 0);
  CHECK(h.Matches(0, offset));
  CHECK(h.Matches(offset + 4096, 64 * KiB - offset - 4096));
  CHECK(h.Read(offset, 4096).err == EIO);  // still: nothing was rewritten
}

// ---------------------------------------------------------------------------
// Crash reconciliation across copies.

TEST_CASE("mirror: after a crash, the copy whose data matches its durable entry wins") {
  Harness h;
  REQUIRE(h.Open() == 0);
  const uint64_t offset = 2 * 64 * KiB + 8 * KiB;  // region 2
  const std::vector<uint8_t> old_block = Pattern(4096, 30);
  CHECK(h.Write(offset, old_block) == 0);
  REQUIRE(h.Close() == 0);  // the table on both copies holds old_block's entry
  h.vol.reset();
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(offset, Pattern(4096, 31)) == 0);  // its entry stays in the cache
  h.Crash();
  // The new write reached copy 0 only: copy 1 still holds the old block, which its entry
  // matches, so copy 1 wins although it is not the lowest slot.
  const auto [set, at] = h.Locate(offset);
  h.PutBlock(1, at, old_block);
  REQUIRE(h.BlockOn(0, at) != old_block);
  const size_t since = h.members[0]->log.size();
  REQUIRE(h.Open() == 0);
  CHECK(h.BlockOn(0, at) == old_block);
  CHECK(h.BlockOn(1, at) == old_block);
  CHECK(h.members[0]->Count(MemberOp::kWrite, h.geometry.data, since) == 1);  // that block only
  CHECK(h.Counter("resync_mismatches") == 1);
  std::copy(old_block.begin(), old_block.end(), h.model.begin() + offset);
  CHECK(h.Matches(0, 256 * KiB));
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(0, 1));
}

TEST_CASE("mirror: after a crash, copies that differ end equal; the lowest current copy wins") {
  // The intent bit on both copies, then on one copy only (each way): every copy's bitmap counts.
  for (int bits_on : {-1, 0, 1}) {
    CAPTURE(bits_on);
    Harness h;
    REQUIRE(h.Open() == 0);
    const uint64_t clean_offset = 10 * 64 * KiB;  // region 10: written, then stopped clean
    CHECK(h.Write(clean_offset, Pattern(8 * KiB, 40)) == 0);
    REQUIRE(h.Close() == 0);
    h.vol.reset();
    REQUIRE(h.Open() == 0);
    const uint64_t offset = 3 * 64 * KiB;  // region 3: written just before the crash
    CHECK(h.Write(offset, Pattern(16 * KiB, 41)) == 0);
    h.Crash();
    const auto [set, at] = h.Locate(offset + 4 * KiB);
    const auto [clean_set, clean_at] = h.Locate(clean_offset);
    REQUIRE(h.IntentBit(0, at));
    REQUIRE(h.IntentBit(1, at));
    if (bits_on >= 0) h.SetIntentBit(1 - bits_on, at, false);
    // The second block of the write reached copy 1 differently (no table entry matches either:
    // the table was never written back), and region 10 of copy 1 rotted while clean.
    h.PutBlock(1, at, Pattern(4096, 42));
    h.members[1]->bytes[clean_at + 5] ^= 0x44;
    std::vector<size_t> since{h.members[0]->log.size(), h.members[1]->log.size()};
    REQUIRE(h.Open() == 0);
    CHECK(h.BlockOn(1, at) == h.BlockOn(0, at));
    CHECK(h.Counter("resync_mismatches") == 1);
    CHECK(h.members[0]->Count(MemberOp::kWrite, h.geometry.data, since[0]) == 0);  // copy 0 won
    CHECK(h.members[1]->Count(MemberOp::kWrite, h.geometry.data, since[1]) == 1);
    // The clean region was neither read nor written.
    for (uint32_t m : {0u, 1u})
      CHECK(h.members[m]->Count(MemberOp::kRead, {clean_at, 64 * KiB}, since[m]) == 0);
    CHECK(h.members[1]->bytes[clean_at + 5] != h.members[0]->bytes[clean_at + 5]);
    h.model.assign(h.model.size(), 0);
    const std::vector<uint8_t> clean = Pattern(8 * KiB, 40);
    std::copy(clean.begin(), clean.end(), h.model.begin() + clean_offset);
    const std::vector<uint8_t> dirty = Pattern(16 * KiB, 41);
    std::copy(dirty.begin(), dirty.end(), h.model.begin() + offset);
    CHECK(h.Matches(offset, 16 * KiB));
    REQUIRE(h.Close() == 0);
    // Both bitmaps were written whole again: no bit is left set on either copy.
    CHECK_FALSE(h.IntentBit(0, at));
    CHECK_FALSE(h.IntentBit(1, at));
  }
}

TEST_CASE("raid10: after a crash, each set's copies are reconciled") {
  Harness h(Raid10());
  REQUIRE(h.Open() == 0);
  CHECK(h.Write(0, Pattern(64 * KiB, 50)) == 0);  // both sets
  h.Crash();
  const auto [set0, at0] = h.Locate(0);
  const auto [set1, at1] = h.Locate(8 * KiB);
  REQUIRE(set0 == 0);
  REQUIRE(set1 == 1);
  h.PutBlock(1, at0, Pattern(4096, 51));
  h.PutBlock(3, at1, Pattern(4096, 52));
  h.PutBlock(2, at1 + 4096, Pattern(4096, 53));
  REQUIRE(h.Open() == 0);
  CHECK(h.Counter("resync_mismatches") == 3);
  CHECK(h.Matches(0, 4096));  // the lowest copy's data: what was written
  CHECK(h.Matches(8 * KiB, 4096));
  REQUIRE(h.Close() == 0);
  CHECK(h.SameAfterSuperblocks(0, 1));
  CHECK(h.SameAfterSuperblocks(2, 3));
}

}  // namespace
}  // namespace dst::integrity::redundant_volume_test
