// IntegrityCounters: what a checksummed volume counts about its own work
// (verification, merges, recovery), and NamedCounter, the one form in which
// the volume hands out all of its numbers (these, and those of its table
// cache and write-intent bitmap), so that the stats line, `status` and the
// metrics endpoint print one list with one name each (docs/integrity.md,
// "Counters").
//
// Threading: plain data; read on the volume's event-loop thread.
#pragma once

#include <cstdint>
#include <string_view>

#include "aggregator/volume/device_state.h"

namespace dst::integrity {

struct IntegrityCounters {
  uint64_t checksum_errors = 0;    // blocks that failed verification twice: the client got EIO
  uint64_t rereads_recovered = 0;  // blocks that failed once and verified when read again
  uint64_t rmw_blocks = 0;         // partial blocks read to be merged with a write
  uint64_t recomputed_regions = 0;
  uint64_t recomputed_bytes = 0;
  uint64_t resync_mismatches = 0;  // mirror, raid10: blocks whose copies differed at recovery
  uint64_t resync_bytes = 0;       // mirror, raid10: bytes a bitmap resync copied to a copy
  uint64_t rebuild_bytes = 0;      // mirror, raid10: bytes a full rebuild copied to a copy
  // Blocks a resync or rebuild found bad on every current copy (left as they were on the target).
  uint64_t resync_unrecoverable = 0;
  // Keyed and encrypted volumes: blocks of dirty regions whose data did not verify against their
  // entry at recovery; not re-checksummed, they read as EIO until rewritten.
  uint64_t recovery_unverified = 0;
};

// The volume hands its numbers out as volume::NamedCounter (device_state.h).
using volume::NamedCounter;

}  // namespace dst::integrity
