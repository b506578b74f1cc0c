// Volume layouts: where each byte of the aggregated volume lives on the member
// exports. Pure arithmetic on the member sizes; no sockets, no I/O, no libnbd.
//
// Contract: Map() never fails. Requests are validated by the caller (the NBD
// server has to answer out-of-range requests with EINVAL anyway), so callers
// guarantee offset + length <= size(). There are no assertions: whatever part
// of a request lies beyond size() is dropped, so a forgotten check yields a
// short mapping but never an extent outside the members.
//
// Threading: a Layout is immutable after construction. Every method is const
// and may be called concurrently from any number of threads without locking;
// share one instance between all connections of a volume.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dst::volume {

// Stripe chunk size bounds. 512 B is the smallest NBD block size; chunks
// above 1 GiB would make a stripe indistinguishable from a linear volume while
// wasting up to a chunk at the end of every member.
inline constexpr uint64_t kMinChunkSize = 512;
inline constexpr uint64_t kMaxChunkSize = uint64_t{1} << 30;
inline constexpr uint64_t kDefaultChunkSize = 64 * 1024;

// EINVAL unless the chunk size is a power of two within [kMinChunkSize, kMaxChunkSize].
Status ValidateChunkSize(uint64_t chunk_size);

// One contiguous piece of a volume request on one member.
struct MemberExtent {
  uint32_t member;         // index into the member list, in configuration order
  uint64_t member_offset;  // where the piece starts on the member
  uint64_t length;         // bytes; always > 0
  // Where the piece starts in the volume. For a request at `offset`, the piece
  // belongs at (volume_offset - offset) in the client's buffer.
  uint64_t volume_offset;

  bool operator==(const MemberExtent&) const = default;
};

// kMirror and kRaid10 keep copies of every byte on sets of members (set_geometry.h). They are
// laid out over their sets, as a linear (mirror) or stripe (raid10) layout whose "members" are the
// sets, never directly over members: MakeLayout refuses them.
enum class LayoutKind { kLinear, kStripe, kMirror, kRaid10 };

// "linear", "stripe", "mirror" or "raid10", the names used in configuration.
std::string_view LayoutKindName(LayoutKind kind);
// Accepts exactly the names LayoutKindName returns.
Status ParseLayoutKind(std::string_view text, LayoutKind* out);

class Layout {
 public:
  virtual ~Layout() = default;

  virtual LayoutKind kind() const = 0;
  // Volume size in bytes, < 2^63.
  virtual uint64_t size() const = 0;
  // Number of members, including those the volume does not use.
  virtual uint32_t member_count() const = 0;
  // Bytes of `member` the volume uses, always a prefix [0, usable) of the
  // member; 0 for an unused or out-of-range member.
  virtual uint64_t member_usable_size(uint32_t member) const = 0;

  // Maps [offset, offset + length) to extents in ascending volume order that
  // cover it exactly. Adjacent pieces are merged when they are contiguous on
  // the same member, so the result is as short as the layout allows. Returns
  // an empty vector for length 0.
  std::vector<MemberExtent> Map(uint64_t offset, uint64_t length) const;
  // As Map(), but appends to `out` so a caller can reuse one vector per
  // connection and map without allocating. Existing elements of `out` are left
  // alone and never merged with.
  void AppendMap(uint64_t offset, uint64_t length, std::vector<MemberExtent>& out) const;
  // As AppendMap(), but stops after at most `max_extents` extents (> 0), so
  // that a huge request can be mapped a bounded piece at a time. Returns the
  // bytes mapped: the extents cover [offset, offset + returned value).
  uint64_t AppendMapPrefix(uint64_t offset, uint64_t length, size_t max_extents,
                           std::vector<MemberExtent>& out) const;
  // The first extent of Map(offset, length), without a vector: a request is
  // walked extent by extent by calling it again past each one. Its length is
  // 0 when there is nothing to map (length 0, or offset past the end).
  MemberExtent FirstExtent(uint64_t offset, uint64_t length) const;
  // The member runs of [offset, offset + length): the bytes the range touches
  // on each member, merged where they are contiguous on that member. A range
  // touches one contiguous stretch of each member in both layouts (a stripe's
  // rows follow one another on every member), so this is at most one run per
  // member, in the order the members first appear, however many chunks the
  // range spans. A run's volume_offset is where its first byte is; for a
  // stripe its bytes are not contiguous in the volume. For requests without
  // a payload (TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS), which need no
  // buffer placement. Existing elements of `out` are left alone.
  void AppendRuns(uint64_t offset, uint64_t length, std::vector<MemberExtent>& out) const;
  // The inverse of Map for one byte: the volume offset that byte
  // `member_offset` of `member` holds. Callers pass member_offset <
  // member_usable_size(member); the result is unspecified otherwise.
  virtual uint64_t VolumeOffset(uint32_t member, uint64_t member_offset) const = 0;

 private:
  // Called with 0 < length, offset + length <= size() and max_extents > 0;
  // appends at most max_extents extents and returns the bytes they cover.
  virtual uint64_t AppendInRange(uint64_t offset, uint64_t length, size_t max_extents,
                                 std::vector<MemberExtent>& out) const = 0;
  // The first of them, under the same conditions.
  virtual MemberExtent FirstInRange(uint64_t offset, uint64_t length) const = 0;
};

// Members concatenated in order, like RAID linear: the volume is member 0,
// then member 1, and so on. Sizes may differ; empty members take no space and
// never appear in a mapping. A request produces at most one extent per member.
class LinearLayout final : public Layout {
 public:
  // Expects sizes that MakeLayout accepts: at least one byte in total and a
  // total below 2^63.
  explicit LinearLayout(std::vector<uint64_t> member_sizes);

  LayoutKind kind() const override { return LayoutKind::kLinear; }
  uint64_t size() const override { return size_; }
  uint32_t member_count() const override;
  uint64_t member_usable_size(uint32_t member) const override;
  uint64_t VolumeOffset(uint32_t member, uint64_t member_offset) const override;

 private:
  // A non-empty member and where it starts in the volume.
  struct Segment {
    uint64_t volume_offset;
    uint64_t length;
    uint32_t member;
  };

  uint64_t AppendInRange(uint64_t offset, uint64_t length, size_t max_extents,
                         std::vector<MemberExtent>& out) const override;
  MemberExtent FirstInRange(uint64_t offset, uint64_t length) const override;

  std::vector<uint64_t> member_sizes_;
  std::vector<Segment> segments_;        // ascending volume_offset; the first is at 0
  std::vector<uint64_t> member_starts_;  // volume offset of each member's first byte
  uint64_t size_ = 0;
};

// RAID-0: the volume is cut into chunks dealt round-robin to the members.
// Chunk c lives on member c % N at member offset (c / N) * chunk_size. Every
// member contributes the same number of whole chunks, as many as fit on the
// smallest member; the rest of each member is unused.
//
// Consecutive chunks are always on different members when N > 1, so extents
// are merged only with a single member, where a request maps to one extent.
// With N > 1 a request yields one extent per chunk it touches.
class StripeLayout final : public Layout {
 public:
  // Expects what MakeLayout accepts: a power-of-two chunk size within
  // [kMinChunkSize, kMaxChunkSize], every member at least one chunk, and a
  // volume size below 2^63.
  explicit StripeLayout(std::vector<uint64_t> member_sizes,
                        uint64_t chunk_size = kDefaultChunkSize);

  LayoutKind kind() const override { return LayoutKind::kStripe; }
  uint64_t size() const override { return size_; }
  uint32_t member_count() const override { return member_count_; }
  uint64_t member_usable_size(uint32_t member) const override;
  uint64_t VolumeOffset(uint32_t member, uint64_t member_offset) const override;
  uint64_t chunk_size() const { return chunk_size_; }

 private:
  uint64_t AppendInRange(uint64_t offset, uint64_t length, size_t max_extents,
                         std::vector<MemberExtent>& out) const override;
  MemberExtent FirstInRange(uint64_t offset, uint64_t length) const override;

  uint32_t member_count_ = 0;
  uint64_t chunk_size_ = 0;
  int chunk_shift_ = 0;  // log2(chunk_size_)
  uint64_t usable_per_member_ = 0;
  uint64_t size_ = 0;
};

// Validates the configuration and builds the layout into *out, which is left
// untouched on error. `chunk_size` applies to kStripe only and is ignored for
// kLinear. Errors are EINVAL with a one-line message naming the bad value;
// members are numbered from 0 in configuration order, as in MemberExtent.
// kMirror and kRaid10 are refused: MakeSetLayout (set_geometry.h) lays them out.
Status MakeLayout(LayoutKind kind, std::vector<uint64_t> member_sizes, uint64_t chunk_size,
                  std::unique_ptr<Layout>* out);

}  // namespace dst::volume
