// Crash recovery of a checksummed volume (docs/integrity.md, "Crash
// consistency"): the checksum entries of every region whose write-intent bit
// is set are recomputed from the data the members hold (keyed and encrypted
// volumes: verified instead, see RecomputeInputs::authenticated). A block of zeros
// becomes unwritten (entry zero); every other block gets the checksum of what
// it holds. Regions whose bit is clear are neither read nor changed.
//
// Mirror and raid10 (docs/redundancy.md, "Crash reconciliation"): when the
// inputs name the copies of each set, a dirty slice is read from every current
// copy (only_copy). Copies that agree are recomputed as above. Where they
// differ, block by block, the first copy whose data matches its own durable
// table entry (read from that copy's table page) wins, else the lowest current
// copy; the winner's block is written to the copies that differ and the entry
// recomputed from it. Each region with differences is logged in one line.
//
// Recovery works only on what it is given: the members' data areas, the
// layout over them (which volume block a data-area block is), the table
// cache, a checksum function and the counters to fill in. It knows nothing of
// the volume that owns them, so it can be run (and tested) alone.
//
// Contract: Recompute() reads the planned slices a few at a time, pins their
// table pages, writes the entries and marks the pages dirty (the volume's
// cleaner writes them back); it calls `done` exactly once, from a member or
// table completion, with 0 or the errno of the first slice that failed
// (logged), after every slice already started has finished. Everything the
// inputs point to must outlive the recomputation, unless `owner` expires
// first: completions that arrive after that are dropped, `done` included.
//
// Threading: the event-loop thread of the members and the table cache.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "aggregator/integrity/integrity_counters.h"
#include "aggregator/integrity/table_cache.h"
#include "aggregator/volume/layout.h"
#include "aggregator/volume/member_io.h"
#include "common/checksum.h"
#include "common/lifetime.h"

namespace dst::integrity {

// The table entry of volume block `volume_block` holding `data` (one block).
using BlockChecksumFn = std::function<Digest(uint64_t volume_block, const uint8_t* data)>;

// The copies of each set (a data area's target), for a mirror or raid10.
struct RecomputeCopies {
  // The current copies of set m, ascending (only_copy values). One copy: the
  // slice is recomputed as for a plain member.
  std::function<std::vector<uint32_t>(uint32_t member)> current;
  std::vector<volume::MemberTarget*> targets;  // each set whole (its table pages), by member index
  std::vector<MemberGeometry> geometries;      // each set's areas, by member index
  uint64_t region_size = 0;
  // "member 1 nbd://host/e" for copy c of set m: for log lines.
  std::function<std::string(uint32_t member, uint32_t copy)> describe;
  uint64_t* mismatches = nullptr;  // blocks whose copies differed, counted up
};

struct RecomputeInputs {
  std::string volume;                             // names the volume in log lines
  std::vector<volume::MemberTarget*> data_areas;  // each member's data area, by member index
  const volume::Layout* layout = nullptr;         // the volume's layout over the data areas
  TableCache* table = nullptr;                    // the members' checksum tables
  uint32_t block_size = 0;
  BlockChecksumFn checksum;
  IntegrityCounters* counters = nullptr;  // recomputed_regions and recomputed_bytes are set
  LifetimeWatch owner;                    // of everything above
  std::optional<RecomputeCopies> copies;  // mirror and raid10 only
  // Keyed and encrypted volumes (docs/encryption.md, "Recovery never launders"): no entry is
  // computed from what a member holds, which an export host could have forged. A block keeps its
  // entry: one whose data verifies against it is fine; one whose data does not is counted
  // (recovery_unverified), logged, and reads as EIO until rewritten; a zero entry stays zero (a
  // write whose entry never became durable was never flushed). Mirror and raid10: a copy whose
  // data verifies against its own durable entry wins, and that entry is taken.
  bool authenticated = false;
};

// [offset, offset + length) of member `member`'s data area.
struct RecomputeSlice {
  uint32_t member = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const RecomputeSlice&) const = default;
};

struct RecomputePlan {
  std::vector<RecomputeSlice> slices;
  uint64_t regions = 0;  // dirty regions that hold volume data
  uint64_t bytes = 0;    // what the slices cover
};

// The slices to read for the dirty regions, `dirty[m]` being the regions
// (of `region_size` bytes) of member m whose bit is set. The part of a region
// past what the layout uses of its member is left out (it has no volume
// address); slices are at most 4 MiB and at most the member's largest request.
RecomputePlan PlanRecompute(const RecomputeInputs& inputs, uint64_t region_size,
                            const std::vector<std::vector<uint64_t>>& dirty);

// Carries the plan out, showing progress (a bar on a terminal, otherwise a
// log line every 2 s) and logging the result.
void Recompute(RecomputeInputs inputs, RecomputePlan plan, std::function<void(int err)> done);

}  // namespace dst::integrity
