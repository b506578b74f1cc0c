// Test harness for ChecksummedVolume over copies (mirror and raid10) on in-memory members
// (test_members.h): members formatted as `create` formats them (format version 2, both superblock
// slots, zeroed metadata and data), a volume assembled from what their slots say, and helpers to
// read, write and look at what each member holds.
#pragma once

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
#include "aggregator/integrity/test_superblock.h"
#include "aggregator/volume/member_io.h"
#include "aggregator/volume/set_geometry.h"

namespace dst::integrity::testing {

using volume::ByteRange;
using volume::CopyRole;
using volume::LayoutKind;
using volume::MemberOp;

struct Setup {
  LayoutKind layout = LayoutKind::kMirror;
  uint32_t members = 2;
  uint32_t copies = 2;
  uint64_t member_size = 2 * MiB;
  uint64_t chunk = 8 * KiB;  // raid10 only
  FormatParams params{.block_size = 4096, .region_size = 64 * KiB};
  WorkerPool* workers = nullptr;  // ChecksumOptions::workers
};

inline Setup Raid10() {
  return {.layout = LayoutKind::kRaid10, .members = 4, .copies = 2};
}

struct ReadResult {
  int err = kPending;
  std::vector<uint8_t> data;
};

class Harness {
 public:
  explicit Harness(Setup setup = {}) : setup_(setup) {
    MemberGeometry g;
    REQUIRE(ComputeGeometry(setup_.member_size, setup_.params, kFormatVersion2, &g).ok());
    geometry = g;
    volume::SetGeometry sets;
    REQUIRE(volume::MakeSetGeometry(setup_.layout, setup_.members, setup_.copies, &sets).ok());
    std::vector<uint64_t> data_sizes(setup_.members, g.data.size);
    std::unique_ptr<volume::Layout> layout;
    REQUIRE(volume::MakeSetLayout(sets, data_sizes,
                                  setup_.layout == LayoutKind::kRaid10 ? setup_.chunk : 0, &layout)
                .ok());
    set_layout = std::move(layout);
    for (uint32_t i = 0; i < setup_.members; ++i) {
      members.push_back(std::make_unique<MemMember>(io, &clock, "mem" + std::to_string(i),
                                                    setup_.member_size, MemberCaps()));
      Superblock sb = testing::TestIdentity(i, setup_.members);
      sb.version = kFormatVersion2;
      sb.layout = setup_.layout;
      sb.chunk_size = setup_.layout == LayoutKind::kRaid10 ? setup_.chunk : 0;
      sb.volume_size = set_layout->size();
      sb.geometry = g;
      sb.copies = setup_.copies;
      sb.generation = testing::TestUuid(0xc);
      for (uint32_t m = 0; m < setup_.members; ++m) {
        sb.member_states[m] = MemberState::kActive;
        sb.slot_members[m] = MemberUuid(m);
      }
      const Status valid = ValidateSuperblock(sb);
      REQUIRE_MESSAGE(valid.ok(), valid.message());
      testing::WriteSuperblockSlots(sb, members[i]->bytes);
    }
    model.assign(set_layout->size(), 0);
  }

  ~Harness() {
    vol.reset();
    io.restart();
    io.poll();
  }

  static Uuid MemberUuid(uint32_t i) { return TestUuid(static_cast<uint8_t>(i + 1)); }

  Superblock OnDisk(uint32_t i) const {
    const auto& m = members[i];
    SlotChoice choice;
    const Status s =
        ChooseSlot(std::span<const uint8_t>(m->bytes.data(), kSlotSize),
                   std::span<const uint8_t>(m->bytes.data() + kSlotSize, kSlotSize), &choice);
    REQUIRE_MESSAGE(s.ok(), s.message());
    return choice.superblock;
  }

  // Assembles the volume from what the members hold, `missing` slots left out (target nullptr,
  // role out, recorded missing in the view), and opens it.
  int Open(const std::vector<uint32_t>& missing = {}) {
    std::vector<RedundantSlot> slots;
    std::optional<Superblock> view;
    for (uint32_t i = 0; i < members.size(); ++i) {
      const bool gone = std::find(missing.begin(), missing.end(), i) != missing.end();
      if (gone) {
        slots.push_back({nullptr, std::nullopt, CopyRole::kOut});
        continue;
      }
      const Superblock sb = OnDisk(i);
      if (!view || sb.event > view->event) view = sb;
      slots.push_back({members[i].get(), sb, CopyRole::kCurrent});
    }
    for (uint32_t i : missing)
      view->member_states[i] = MemberState::kMissing;
    const Status s =
        ChecksummedVolume::CreateRedundant(io, std::move(slots), *view, {}, Options(), &vol);
    REQUIRE_MESSAGE(s.ok(), s.message());
    int result = kPending;
    vol->Open([&](int err) { result = err; });
    REQUIRE(Pump([&] { return result != kPending; }));
    return result;
  }

  // Assembles as a restart after copies came back: every member present, the slots the freshest
  // superblock does not call active out and, unless `catch_up` is false, caught up by CatchUp()
  // (`full`: a rebuild), then opens.
  int OpenCatchingUp(bool full = false, bool catch_up = true) {
    std::vector<RedundantSlot> slots;
    std::optional<Superblock> view;
    for (uint32_t i = 0; i < members.size(); ++i) {
      const Superblock sb = OnDisk(i);
      if (!view || sb.event > view->event) view = sb;
    }
    for (uint32_t i = 0; i < members.size(); ++i) {
      const bool active = view->member_states[i] == MemberState::kActive;
      slots.push_back({members[i].get(), OnDisk(i), active ? CopyRole::kCurrent : CopyRole::kOut});
    }
    const Status s =
        ChecksummedVolume::CreateRedundant(io, std::move(slots), *view, {}, Options(), &vol);
    REQUIRE_MESSAGE(s.ok(), s.message());
    for (uint32_t i = 0; i < members.size(); ++i)
      if (catch_up && view->member_states[i] != MemberState::kActive) vol->CatchUp(i, full, "test");
    int result = kPending;
    vol->Open([&](int err) { result = err; });
    REQUIRE(Pump([&] { return result != kPending; }));
    return result;
  }

  // Runs the loop until no background job is left (at most `limit`).
  bool RunJobs(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    return testing::RunFor(io, limit, [&] { return vol->jobs().Status().empty(); });
  }

  int Close() {
    int result = kPending;
    vol->Close([&](int err) { result = err; });
    REQUIRE(Pump([&] { return result != kPending; }));
    return result;
  }

  static ChecksumOptions QuietOptions() {
    ChecksumOptions options;
    options.clean_interval = std::chrono::hours(1);  // the cleaner stays out of the way
    return options;
  }
  ChecksumOptions Options() const {
    ChecksumOptions options = QuietOptions();
    options.workers = setup_.workers;
    return options;
  }

  // Runs the loop until `until` holds; with none, until nothing is left to run now. With a worker
  // pool, `until` may wait for completions that come back from its threads: a bounded while.
  bool Pump(const std::function<bool()>& until = nullptr) {
    if (!until) return testing::Pump(io, [] { return false; });
    if (setup_.workers == nullptr) return testing::Pump(io, until);
    return testing::RunFor(io, std::chrono::seconds(20), until);
  }

  int Write(uint64_t offset, const std::vector<uint8_t>& data) {
    int result = kPending;
    vol->Write(offset, data.size(), data.data(), false, [&](int err) { result = err; });
    REQUIRE(Pump([&] { return result != kPending; }));
    if (result == 0) std::copy(data.begin(), data.end(), model.begin() + offset);
    return result;
  }

  ReadResult Read(uint64_t offset, uint64_t length) {
    ReadResult r;
    r.data.assign(length, 0xee);
    vol->Read(offset, length, r.data.data(), [&](int err, std::vector<ByteRange>) { r.err = err; });
    REQUIRE(Pump([&] { return r.err != kPending; }));
    Pump();  // and whatever the read started (repairs)
    return r;
  }

  bool Matches(uint64_t offset, uint64_t length) {
    const ReadResult r = Read(offset, length);
    return r.err == 0 && std::equal(r.data.begin(), r.data.end(), model.begin() + offset);
  }

  // The set holding volume byte `offset`, and the member byte offset on each of its copies.
  std::pair<uint32_t, uint64_t> Locate(uint64_t offset) const {
    const volume::MemberExtent e = set_layout->Map(offset, 1).at(0);
    return {e.member, geometry.data.offset + e.member_offset};
  }
  uint32_t MemberOf(uint32_t set, uint32_t copy) const { return set * setup_.copies + copy; }

  // Everything after the superblocks (bitmap, table, data) of two members.
  bool SameAfterSuperblocks(uint32_t a, uint32_t b) const {
    const uint64_t from = geometry.superblocks.end();
    return std::equal(members[a]->bytes.begin() + from, members[a]->bytes.end(),
                      members[b]->bytes.begin() + from);
  }

  // Reads of the data area of member `m` from log entry `since` on.
  size_t DataReads(uint32_t m, size_t since = 0) const {
    return members[m]->Count(MemberOp::kRead, geometry.data, since);
  }

  // The copy of set `set` that serves a read of volume block `offset` (the read balancing's
  // choice), found by reading it.
  uint32_t ServingCopy(uint32_t set, uint64_t offset) {
    std::vector<size_t> before;
    for (uint32_t c = 0; c < setup_.copies; ++c)
      before.push_back(members[MemberOf(set, c)]->log.size());
    REQUIRE(Read(offset, setup_.params.block_size).err == 0);
    for (uint32_t c = 0; c < setup_.copies; ++c)
      if (DataReads(MemberOf(set, c), before[c]) > 0) return c;
    FAIL("no copy served the read");
    return 0;
  }

  // The missed-write bit of `region` as member `m` holds it, and how many are set.
  bool MissedOnMember(uint32_t m, uint64_t region) const {
    return (members[m]->bytes[geometry.missed_writes.offset + region / 8] >> (region % 8)) & 1;
  }
  size_t MissedBitsOnMember(uint32_t m) const {
    size_t n = 0;
    for (uint64_t i = geometry.missed_writes.offset; i < geometry.missed_writes.end(); ++i)
      n += static_cast<size_t>(std::popcount(members[m]->bytes[i]));
    return n;
  }

  // A crash: the volume is dropped without Close(), its superblocks dirty and its bits set.
  void Crash() {
    vol.reset();
    io.restart();
    io.poll();
  }

  // The write-intent bit of the region holding member byte `at` (a data-area byte) on member m.
  void SetIntentBit(uint32_t m, uint64_t at, bool set) {
    const BitmapBit bit = LocateBitmapBit(geometry, at - geometry.data.offset);
    uint8_t& byte = members[m]->bytes[bit.member_offset];
    byte = set ? (byte | bit.mask) : (byte & static_cast<uint8_t>(~bit.mask));
  }
  bool IntentBit(uint32_t m, uint64_t at) const {
    const BitmapBit bit = LocateBitmapBit(geometry, at - geometry.data.offset);
    return (members[m]->bytes[bit.member_offset] & bit.mask) != 0;
  }

  // The block at member byte `at` on member m.
  std::vector<uint8_t> BlockOn(uint32_t m, uint64_t at) const {
    return {members[m]->bytes.begin() + at, members[m]->bytes.begin() + at + 4096};
  }
  void PutBlock(uint32_t m, uint64_t at, const std::vector<uint8_t>& block) {
    std::copy(block.begin(), block.end(), members[m]->bytes.begin() + at);
  }

  const volume::SlotState& Slot(uint32_t i) const {
    state = vol->State();
    REQUIRE(state.redundancy.has_value());
    return state.redundancy->slots.at(i);
  }
  uint64_t Counter(const std::string& name) const {
    for (const auto& c : vol->Counters())
      if (c.name == name) return c.value;
    FAIL("no counter " << name);
    return 0;
  }

  asio::io_context io;  // first: destroyed last
  uint64_t clock = 0;
  std::vector<std::unique_ptr<MemMember>> members;
  MemberGeometry geometry;
  std::unique_ptr<volume::Layout> set_layout;
  std::vector<uint8_t> model;
  std::unique_ptr<ChecksummedVolume> vol;
  mutable volume::DeviceState state;

 private:
  Setup setup_;
};

// Whether members a and b hold the same bytes in `area`.
inline bool SameArea(const Harness& h, const Area& area, uint32_t a, uint32_t b) {
  return std::equal(h.members[a]->bytes.begin() + area.offset,
                    h.members[a]->bytes.begin() + area.end(),
                    h.members[b]->bytes.begin() + area.offset);
}

// Slot 1 demoted by a client write at `at` that fails on it.
inline void DemoteSlot1(Harness& h, uint64_t at) {
  h.members[1]->faults.push_back(
      {volume::MemberOp::kWrite, h.geometry.data.offset, h.geometry.data.end()});
  REQUIRE(h.Write(at, Pattern(8 * KiB, 50)) == 0);
  h.Pump();
  REQUIRE(h.Slot(1).state == "stale");
}

// A restart in which member `fresh` (the last of h.members) stands in slot `slot` for the member
// it replaced, which is gone: the volume assembled again, catching up as a restart does.
inline int RestartWithNewMember(Harness& h, uint32_t slot, uint32_t fresh) {
  h.vol.reset();
  h.io.restart();
  h.io.poll();
  std::swap(h.members[slot], h.members[fresh]);
  h.members.pop_back();  // the old member
  return h.OpenCatchingUp();
}

// Reads of member m's data area (a resync's or rebuild's source reads) wait until StopHolding():
// the job stays under way.
inline void HoldDataReads(Harness& h, uint32_t m) {
  const Area data = h.geometry.data;
  h.members[m]->hold = [data](const volume::MemberIo& io) {
    return io.op == volume::MemberOp::kRead && io.offset >= data.offset;
  };
}

}  // namespace dst::integrity::testing
