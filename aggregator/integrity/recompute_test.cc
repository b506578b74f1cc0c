// Crash recovery on its own: PlanRecompute() and Recompute() given in-memory members
// (test_members.h), their data areas, a layout, a real TableCache and a checksum function that
// shows which volume block and which data it was given. No volume is assembled: what recovery
// reads, writes and counts is all it is given.
#include "aggregator/integrity/recompute.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include <doctest/doctest.h>
#include <asio.hpp>

#include "aggregator/integrity/data_area_member.h"
#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/table_cache.h"
#include "aggregator/integrity/test_members.h"
#include "aggregator/volume/layout.h"
#include "common/lifetime.h"

namespace dst::integrity::recompute_test {
namespace {

using testing::KiB;
using testing::kPending;
using testing::MemMember;
using testing::Pattern;
using volume::MemberOp;

constexpr uint32_t kBlock = 4096;
constexpr uint64_t kRegion = 64 * KiB;
constexpr uint64_t kMemberSize = 2 * testing::MiB;  // 1 MiB of data after 1 MiB of metadata

// A 4-byte entry (crc32c's size) that names the volume block and the data's first and last byte.
Digest Fake(uint64_t volume_block, const uint8_t* data) {
  Digest d;
  d.length = 4;
  d.bytes = {0xc5, static_cast<uint8_t>(volume_block), data[0], data[kBlock - 1]};
  return d;
}

// Members of the given sizes striped in `chunk` bytes, with their data areas, layout and table
// cache.
class Rig {
 public:
  explicit Rig(std::vector<uint64_t> sizes = {kMemberSize, kMemberSize}, uint64_t chunk = 8 * KiB,
               volume::MemberCapabilities caps = testing::MemberCaps()) {
    const FormatParams params{.block_size = kBlock, .region_size = kRegion};
    std::vector<uint64_t> data_sizes;
    std::vector<volume::MemberTarget*> targets;
    for (uint32_t i = 0; i < sizes.size(); ++i) {
      members.push_back(
          std::make_unique<MemMember>(io, &clock, "mem" + std::to_string(i), sizes[i], caps));
      MemberGeometry g;
      REQUIRE(ComputeGeometry(sizes[i], params, &g).ok());
      geometry.push_back(g);
      data_sizes.push_back(g.data.size);
      targets.push_back(members.back().get());
      data_areas.push_back(std::make_unique<DataAreaMember>(targets.back(), g.data));
    }
    REQUIRE(volume::MakeLayout(volume::LayoutKind::kStripe, data_sizes, chunk, &layout).ok());
    table = std::make_unique<TableCache>(targets, geometry, uint64_t{1} << 20);
  }

  RecomputeInputs Inputs() {
    RecomputeInputs in{.volume = "vol0",
                       .data_areas = {},
                       .layout = layout.get(),
                       .table = table.get(),
                       .block_size = kBlock,
                       .checksum = Fake,
                       .counters = &counters,
                       .owner = owner.Watch(),
                       .copies = std::nullopt};
    for (const auto& d : data_areas)
      in.data_areas.push_back(d.get());
    return in;
  }

  // Recomputes the dirty regions; the error, or kPending if `done` never ran.
  int Run(const std::vector<std::vector<uint64_t>>& dirty) {
    int result = kPending;
    int calls = 0;
    RecomputeInputs in = Inputs();
    RecomputePlan plan = PlanRecompute(in, kRegion, dirty);
    Recompute(std::move(in), std::move(plan), [&](int err) {
      result = err;
      ++calls;
    });
    testing::Pump(io, [] { return false; });
    CHECK(calls <= 1);
    return result;
  }

  // Writes the table back, so that the entries can be read where they live.
  void WriteBack() {
    int result = kPending;
    table->WriteBack([&](int err) { result = err; });
    REQUIRE(testing::Pump(io, [&] { return result != kPending; }));
    REQUIRE(result == 0);
  }

  uint8_t* Data(uint32_t m, uint64_t block) {
    return members[m]->bytes.data() + geometry[m].data.offset + block * kBlock;
  }
  std::span<uint8_t> EntryOnMember(uint32_t m, uint64_t block) {
    const TableEntryLocation where = LocateTableEntry(geometry[m], block);
    return {members[m]->bytes.data() + where.member_offset, where.size};
  }
  std::vector<uint8_t> Entry(uint32_t m, uint64_t block) {
    const std::span<uint8_t> e = EntryOnMember(m, block);
    return {e.begin(), e.end()};
  }
  // Data-area reads of member `m` that overlap [from, from + length) of its data area.
  size_t DataReads(uint32_t m, uint64_t from, uint64_t length) const {
    return members[m]->Count(MemberOp::kRead, {geometry[m].data.offset + from, length});
  }

  asio::io_context io;  // first: destroyed last
  uint64_t clock = 0;
  std::vector<std::unique_ptr<MemMember>> members;
  std::vector<MemberGeometry> geometry;
  std::vector<std::unique_ptr<DataAreaMember>> data_areas;
  std::unique_ptr<volume::Layout> layout;
  std::unique_ptr<TableCache> table;
  IntegrityCounters counters;
  Lifetime owner;
};

std::vector<uint8_t> EntryOf(const Digest& d) {
  return {d.bytes.begin(), d.bytes.begin() + d.length};
}

const std::vector<uint8_t> kStale = {0xde, 0xad, 0xbe, 0xef};

}  // namespace

// Region 0 of both members is dirty, region 2 of member 0 is not. Every dirty block gets the
// entry of what it holds, under its volume block number (8 KiB chunks: volume blocks 0-1 are
// member 0's blocks 0-1, volume blocks 2-3 member 1's); a dirty block of zeros becomes unwritten
// even though its stale entry said otherwise; the clean region is neither read nor changed.
TEST_CASE("recovery: dirty regions get the entries of their data, clean ones are left alone") {
  Rig rig;
  const std::vector<uint8_t> a = Pattern(kBlock, 1), b = Pattern(kBlock, 2), c = Pattern(kBlock, 3);
  std::copy(a.begin(), a.end(), rig.Data(0, 0));
  std::copy(b.begin(), b.end(), rig.Data(1, 0));
  std::copy(c.begin(), c.end(), rig.Data(0, 32));  // region 2 of member 0
  for (auto [m, block] : {std::pair<uint32_t, uint64_t>{0, 1}, {0, 32}})
    std::copy(kStale.begin(), kStale.end(), rig.EntryOnMember(m, block).begin());

  RecomputeInputs in = rig.Inputs();
  const RecomputePlan plan = PlanRecompute(in, kRegion, {{0}, {0}});
  CHECK(plan.regions == 2);
  CHECK(plan.bytes == 2 * kRegion);
  CHECK(plan.slices == std::vector<RecomputeSlice>{{0, 0, kRegion}, {1, 0, kRegion}});

  REQUIRE(rig.Run({{0}, {0}}) == 0);
  CHECK(rig.counters.recomputed_regions == 2);
  CHECK(rig.counters.recomputed_bytes == 2 * kRegion);
  CHECK(rig.table->dirty_pages() == 2);  // one page per member, for the cleaner to write back
  rig.WriteBack();
  CHECK(rig.Entry(0, 0) == EntryOf(Fake(0, a.data())));
  CHECK(rig.Entry(1, 0) == EntryOf(Fake(2, b.data())));
  CHECK(rig.Entry(0, 1) == std::vector<uint8_t>(4, 0));  // zeros: unwritten
  CHECK(rig.Entry(1, 1) == std::vector<uint8_t>(4, 0));
  CHECK(rig.Entry(0, 32) == kStale);  // clean region: not recomputed
  CHECK(rig.DataReads(0, 0, kRegion) > 0);
  CHECK(rig.DataReads(1, 0, kRegion) > 0);
  CHECK(rig.DataReads(0, kRegion, 15 * kRegion) == 0);
  CHECK(rig.DataReads(1, kRegion, 15 * kRegion) == 0);
}

TEST_CASE("recovery: nothing dirty, nothing read") {
  Rig rig;
  const RecomputePlan plan = PlanRecompute(rig.Inputs(), kRegion, {{}, {}});
  CHECK(plan.slices.empty());
  CHECK(plan.regions == 0);
  CHECK(rig.Run({{}, {}}) == 0);
  CHECK(rig.counters.recomputed_regions == 0);
  CHECK(rig.members[0]->log.empty());
  CHECK(rig.members[1]->log.empty());
}

// Data areas of 1 MiB + 48 KiB and 1 MiB + 112 KiB striped in 16 KiB chunks: the layout uses
// 1 MiB + 48 KiB of each. So region 16 (at 1 MiB) has volume addresses in its first 48 KiB only,
// and region 17 of the larger member none at all. Members that take at most 16 KiB per request
// get 16 KiB slices.
TEST_CASE("recovery: slices keep to what the layout uses and to the members' largest request") {
  volume::MemberCapabilities caps = testing::MemberCaps();
  caps.max_request = 16 * KiB;
  Rig rig({kMemberSize + 48 * KiB, kMemberSize + 112 * KiB}, 16 * KiB, caps);
  REQUIRE(rig.geometry[1].regions() == 18);
  REQUIRE(rig.layout->member_usable_size(1) == testing::MiB + 48 * KiB);
  const RecomputePlan plan = PlanRecompute(rig.Inputs(), kRegion, {{1}, {16, 17}});
  CHECK(plan.regions == 2);
  CHECK(plan.bytes == kRegion + 48 * KiB);
  const uint64_t at = testing::MiB;
  CHECK(plan.slices == std::vector<RecomputeSlice>{{0, 64 * KiB, 16 * KiB},
                                                   {0, 80 * KiB, 16 * KiB},
                                                   {0, 96 * KiB, 16 * KiB},
                                                   {0, 112 * KiB, 16 * KiB},
                                                   {1, at, 16 * KiB},
                                                   {1, at + 16 * KiB, 16 * KiB},
                                                   {1, at + 32 * KiB, 16 * KiB}});
}

// A slice whose read fails ends recovery with the member's errno, once, after the slices
// already started; the entries of the failed slice stay as they were.
TEST_CASE("recovery: a failed read fails it with the member's errno") {
  Rig rig;
  const std::vector<uint8_t> a = Pattern(kBlock, 4);
  std::copy(a.begin(), a.end(), rig.Data(0, 0));
  std::copy(kStale.begin(), kStale.end(), rig.EntryOnMember(0, 16).begin());  // region 1
  const uint64_t region1 = rig.geometry[0].data.offset + kRegion;
  rig.members[0]->faults.push_back({MemberOp::kRead, region1, region1 + kRegion, EIO});
  CHECK(rig.Run({{0, 1}, {}}) == EIO);
  rig.WriteBack();
  CHECK(rig.Entry(0, 0) == EntryOf(Fake(0, a.data())));
  CHECK(rig.Entry(0, 16) == kStale);
}

// The owner gone (here: the table cache destroyed with it) while member reads are in flight:
// their completions must not touch what it owned, and `done` is not called.
TEST_CASE("recovery: completions after the owner is gone are dropped") {
  Rig rig;
  int result = kPending;
  RecomputeInputs in = rig.Inputs();
  RecomputePlan plan = PlanRecompute(in, kRegion, {{0, 1, 2}, {0}});
  Recompute(std::move(in), std::move(plan), [&](int err) { result = err; });
  CHECK(rig.members[0]->log.size() + rig.members[1]->log.size() == 4);  // reads in flight
  rig.owner.End();
  rig.table.reset();
  testing::Pump(rig.io, [] { return false; });
  CHECK(result == kPending);
  // The reads completed; nothing else was submitted (no table page load, no next slice).
  CHECK(rig.members[0]->log.size() + rig.members[1]->log.size() == 4);
}

}  // namespace dst::integrity::recompute_test
