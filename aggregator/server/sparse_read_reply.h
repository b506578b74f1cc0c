// The chunks of a structured read reply that has holes: OFFSET_DATA and
// OFFSET_HOLE chunks in offset order, the last one flagged DONE, in one
// buffer (sparse replies are rare and mostly holes).
//
// The holes come from the volume, which promises them sorted and inside the
// read; they are checked all the same before any data is copied, so that a
// volume that breaks the promise fails the read (EIO) instead of sending
// memory from outside the read's buffer.
//
// Threading: a pure function.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "aggregator/volume/block_device.h"
#include "common/status.h"

namespace dst::server {

// Appends the chunks of the read of `data.size()` bytes at `offset` (with
// `cookie`) to *out. `holes` must be non-empty ranges in ascending order,
// not overlapping, within the read; otherwise EIO naming the first bad hole,
// and *out is left as it was.
Status AppendSparseReadChunks(uint64_t cookie, uint64_t offset, std::span<const uint8_t> data,
                              const std::vector<volume::ByteRange>& holes,
                              std::vector<uint8_t>* out);

}  // namespace dst::server
