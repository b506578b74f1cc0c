// Read balancing over the copies of one mirror set: which copy serves a read, and which copy to
// try next when one fails. Pure: the caller (the mirror set) passes what it knows about each copy
// and keeps the stream state between calls (docs/redundancy.md "Read balancing").
//
// The rules, in order (md's choose_best_rdev and ZFS's vdev_mirror_child_select):
//   1. Eligible: a readable copy; a resyncing or rebuilding copy only when the whole request lies
//      below its cursor.
//   2. Write-mostly copies serve only when no other eligible copy can.
//   3. A sequential stream (a read that starts where the last one ended) stays on its copy until
//      it is kSequentialSpan past where the stream started, unless that copy has more than
//      kBusierSlack bytes in flight beyond the least busy eligible copy.
//   4. Otherwise the copy with the fewest bytes in flight.
//   5. Ties go to tied copy (offset >> kSpreadShift) % (number tied), so idle copies split the
//      volume into 2 MiB areas and each area's reads stay on one copy.
// NextCopy (after a failure) applies 1, 2, 4 and 5 to the copies not yet tried.
//
// Contract: the result is always an eligible copy, or nullopt when none is. Copy indexes are
// positions in the span given.
//
// Threading: pure functions on values; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace dst::volume {

inline constexpr uint64_t kSequentialSpan = uint64_t{1} << 20;
inline constexpr uint64_t kBusierSlack = uint64_t{1} << 20;
inline constexpr unsigned kSpreadShift = 21;

// What the read path knows about one copy of a set.
struct CopyLoad {
  bool readable = true;  // current, or resyncing/rebuilding (then serve_below is set)
  bool write_mostly = false;
  uint64_t bytes_in_flight = 0;
  // Resyncing or rebuilding: only [0, serve_below) holds current data. nullopt: all of it.
  std::optional<uint64_t> serve_below;
};

// A read in the set's address space (the same offsets on every copy).
struct ReadRequest {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// The last sequential stream: its copy, where it started and where its last read ended.
struct ReadStream {
  std::optional<uint32_t> copy;  // nullopt before the first read
  uint64_t start = 0;
  uint64_t end = 0;
};

// The copy that serves `request`, or nullopt when no copy can.
std::optional<uint32_t> ChooseCopy(std::span<const CopyLoad> copies, const ReadRequest& request,
                                   const ReadStream& stream);

// The stream after `request` was sent to `chosen`: continued when it carried on the stream on the
// same copy within the span, otherwise a new stream starting at the request.
ReadStream AdvanceStream(const ReadStream& stream, const ReadRequest& request, uint32_t chosen);

// After a failure: the copy to try next among those not in `tried`, or nullopt when every eligible
// copy has been tried (the read fails, naming every copy tried).
std::optional<uint32_t> NextCopy(std::span<const CopyLoad> copies, const ReadRequest& request,
                                 std::span<const uint32_t> tried);

}  // namespace dst::volume
