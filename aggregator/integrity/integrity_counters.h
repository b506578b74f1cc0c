// IntegrityCounters: what a checksummed volume counts about its own work
// (verification, merges, recovery); recovery fills in its part.
//
// Threading: plain data; read on the volume's event-loop thread.
#pragma once

#include <cstdint>

namespace dst::integrity {

struct IntegrityCounters {
  uint64_t checksum_errors = 0;    // blocks that failed verification twice: the client got EIO
  uint64_t rereads_recovered = 0;  // blocks that failed once and verified when read again
  uint64_t rmw_blocks = 0;         // partial blocks read to be merged with a write
  uint64_t recomputed_regions = 0;
  uint64_t recomputed_bytes = 0;
};

}  // namespace dst::integrity
