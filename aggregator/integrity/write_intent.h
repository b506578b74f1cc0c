// WriteIntent: the write-intent bitmaps of a volume's members (docs/format.md,
// "Write-intent bitmap"). A region's bit is set and flushed on its member
// before the first write into the region; it is cleared, lazily, once the
// region's checksums are durable. After a crash, only regions whose bit is
// set can have a checksum table that disagrees with their data.
//
// Each member's bitmap is kept whole in memory twice: what it should be, and
// what is known to be on the member. Changes reach the member in syncs, one
// at a time per member: the changed pages are written, then the member is
// flushed, and only then are the bits counted as durable. A bit is "durably
// set" when it is set in both copies; clearing drops it from both at once, so
// a region being cleared is never mistaken for protected.
//
// Mirror and raid10 members (format version 2) also have a missed-write map
// (docs/format.md §7.2), one bit per region like the bitmap. While a target
// (a set of copies) is missing a copy, Ensure() sets the missed-write bits of
// the regions it is given on that target too, in the same page writes and
// flush as their intent bits; EnsureMissed() sets them alone (the regions a
// just-demoted copy may have missed). Missed-write bits are never cleared
// here: resync clears them once the set is whole again.
//
// Contract: Ensure() calls `done` before it returns when every region is
// already durably set, otherwise after the sync that sets them (or with the
// errno of the member write or flush that failed). Callers must not Clear() a
// region while a request that Ensure()d it is in flight. Sync() writes what
// Clear() changed.
//
// Threading: the event-loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <set>
#include <vector>

#include "aggregator/integrity/member_format.h"
#include "aggregator/volume/member_io.h"
#include "common/lifetime.h"

namespace dst::integrity {

struct RegionRef {
  uint32_t member;
  uint64_t region;
  bool operator==(const RegionRef&) const = default;
};

class WriteIntent {
 public:
  using Done = std::function<void(int err)>;

  WriteIntent(std::vector<volume::MemberTarget*> members, std::vector<MemberGeometry> geometries);

  // Reads every member's bitmap; bits found set count as durably set.
  void Load(Done done);
  // Mirror and raid10: reads the bitmap and the missed-write map of each of
  // `copies(m)` of every target m (only_copy reads) and takes every bit set on
  // any of them: after a crash a bit may have reached one copy only. A bit
  // that is set on some copies and not on others counts as set but not
  // durable, so the next sync writes it to every copy.
  void Load(std::function<std::vector<int32_t>(uint32_t member)> copies, Done done);

  bool IsSet(uint32_t member, uint64_t region) const;
  // Regions of `member` whose bit is set, ascending.
  std::vector<uint64_t> SetRegions(uint32_t member) const;
  size_t set_count() const;
  uint64_t syncs() const { return syncs_; }

  void Ensure(const std::vector<RegionRef>& regions, Done done);
  // Which targets are missing a copy now (called at every Ensure()). Unset:
  // none ever is (linear and stripe volumes).
  void TrackMissedWrites(std::function<bool(uint32_t member)> degraded);
  void EnsureMissed(const std::vector<RegionRef>& regions, Done done);
  // Sets the missed-write bits of `regions` in memory only and leaves their
  // pages for the next sync; returns the pages of the map that hold them, as
  // {member offset, bytes}, for a caller that writes them itself (to chosen
  // copies, without waiting for the sync of the target).
  struct MapPage {
    uint32_t member;
    uint64_t offset;
    std::vector<uint8_t> bytes;
  };
  std::vector<MapPage> MarkMissed(const std::vector<RegionRef>& regions);
  std::vector<MapPage> MissedPages(const std::vector<RegionRef>& regions) const;
  bool IsMissed(uint32_t member, uint64_t region) const;
  // Regions of `member` whose missed-write bit is set, ascending.
  std::vector<uint64_t> MissedRegions(uint32_t member) const;
  size_t missed_count() const;
  // Clears every missed-write bit of `member` (its set is whole again); the
  // next Sync() writes the pages that changed.
  void ClearMissed(uint32_t member);
  void Clear(uint32_t member, uint64_t region);
  // Writes every changed page of every member and flushes; `done` after.
  void Sync(Done done);

 private:
  struct MemberBitmap {
    std::vector<uint8_t> wanted;   // what the bitmap area should hold
    std::vector<uint8_t> durable;  // what it is known to hold
    std::set<uint64_t> changed_pages;
    std::vector<uint8_t> missed;  // the missed-write map: should hold, and known to hold
    std::vector<uint8_t> missed_durable;
    std::set<uint64_t> missed_changed_pages;
    bool syncing = false;
  };
  // A page a sync writes: of the bitmap or of the missed-write map.
  struct SyncPage {
    bool missed;
    uint64_t index;
    std::vector<uint8_t> bytes;
  };
  struct Waiter {
    // Both empty for Sync(): waits for no changed pages.
    std::vector<RegionRef> regions;
    std::vector<RegionRef> missed;  // missed-write bits
    std::set<uint32_t> members;
    Done done;
  };

  bool DurablySet(const RegionRef& r) const;
  bool MissedDurably(const RegionRef& r) const;
  void EnsureBits(const std::vector<RegionRef>& regions, bool intent, bool only_missed, Done done);
  void StartSync(uint32_t member);
  void FinishSync(uint32_t member, const std::vector<SyncPage>& pages, int err);
  void WakeWaiters();
  // Load()'s result: the bits of every copy read, merged.
  template <typename Reads>
  void Merge(const Reads& reads);

  std::vector<volume::MemberTarget*> members_;
  std::vector<MemberGeometry> geometries_;
  std::vector<MemberBitmap> bitmaps_;
  std::list<Waiter> waiters_;
  std::function<bool(uint32_t member)> degraded_;
  uint64_t syncs_ = 0;
  Lifetime lifetime_;  // last: expires first
};

}  // namespace dst::integrity
