// Volume: one NBD device served to clients, built from members by a Layout.
// A client request becomes a Fanout of member I/Os: reads and writes are cut
// at chunk and member boundaries and at each member's maximum request size;
// requests without a payload (TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS) go to
// each member as its one contiguous run, cut only at kMaxNoPayloadPiece. At
// most kRequestWindow member I/Os of one request are in flight at a time (the
// next is submitted as one completes), so neither a 4 GiB TRIM nor a member
// with a tiny maximum request floods the members. The request completes when
// the last part does, with the first error any part reported; after an error
// no further part is started. A failed request leaves one log line.
//
// Any alignment is served. The members' largest minimum block size is the
// volume's min_block; a request that is not aligned to it is widened to
// whole blocks inside the volume: a read reads the partial blocks at its
// edges whole and copies out what was asked; a write or WRITE_ZEROES reads
// its partial edge blocks, merges, and writes them whole (read-modify-write);
// a TRIM shrinks to the whole blocks inside it (TRIM is advisory); CACHE and
// BLOCK_STATUS widen. A merge holds its blocks exclusively in a RangeLock,
// and from the first merge on every aligned write, zero and trim shares
// its blocks in it, so that a merge never writes back stale bytes over a
// concurrent write (until then, such requests are only counted, and the
// first merge waits for those in flight to finish).
//
// The volume derives its capabilities from its members: read-only if any
// member is, TRIM/WRITE_ZEROES/FAST_ZERO/CACHE/BLOCK_STATUS where members
// support them, with fallbacks (writing zeros, reporting "data").
//
// Threading: single event-loop thread, like MemberTarget. Callers check
// ranges and read-only status before calling; Volume does not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aggregator/volume/block_device.h"
#include "aggregator/volume/layout.h"
#include "aggregator/volume/member_io.h"
#include "aggregator/volume/range_lock.h"
#include "common/status.h"

namespace dst::volume {

class Volume final : public BlockDevice {
 public:
  // Member I/Os one client request may have in flight at once.
  static constexpr size_t kRequestWindow = 64;
  // The largest member I/O without a payload (TRIM, WRITE_ZEROES, CACHE,
  // BLOCK_STATUS): clients send those far larger than reads and writes (the
  // kernel trims whole devices), and NBD lengths are 32-bit.
  static constexpr uint64_t kMaxNoPayloadPiece = uint64_t{1} << 30;
  // A BLOCK_STATUS reply covers at most this many layout extents (stripe
  // chunks) and kMaxNoPayloadPiece bytes; clients ask again for the rest.
  static constexpr size_t kMaxStatusExtents = 4096;

  // Members must outlive the volume. Their capabilities must be known. A
  // layout whose member boundaries would cut a member's minimum block (a
  // stripe chunk smaller than it, a linear member starting off it) is refused.
  static Status Create(std::string name, std::string description, LayoutKind kind,
                       uint64_t chunk_size, std::vector<MemberTarget*> members,
                       std::unique_ptr<Volume>* out);

  const std::string& name() const override { return name_; }
  const std::string& description() const override { return description_; }
  uint64_t size() const override { return layout_->size(); }
  const Layout& layout() const { return *layout_; }
  const VolumeCapabilities& capabilities() const override { return caps_; }
  const std::vector<MemberTarget*>& members() const { return members_; }
  DeviceState State() const override {
    DeviceState state;
    state.layout = layout_->kind();
    state.members = members_.size();
    return state;
  }

  // Reports no holes: a raw volume does not know which blocks were written.
  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override;
  // As Read, for callers that have no use for holes.
  void ReadData(uint64_t offset, uint64_t length, uint8_t* buf, Done done);
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override;
  // Sent to every member; completes after all of them.
  void Flush(Done done) override;
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override;
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override;
  void Cache(uint64_t offset, uint64_t length, Done done) override;
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override;

  // Other event loops' copies of this volume write on their own until its first merge
  // (merge_gate.h): then `barrier` is called, once, and that merge goes on when `barrier` calls
  // back, once their writes in flight are done, as it waits for its own. Before any merge.
  void SetFirstMergeBarrier(std::function<void(std::function<void()> done)> barrier) {
    first_merge_barrier_ = std::move(barrier);
  }

 private:
  class Fanout;
  template <typename F>
  class FanoutTo;
  class StatusFanout;
  struct Segment;
  struct Merge;
  // An unaligned request cut at block boundaries: the partial blocks at its
  // edges (whole, empty when absent) and the whole blocks between them.
  struct BlockSplit {
    ByteRange head, middle, tail;
  };

  Volume(std::string name, std::string description, std::unique_ptr<Layout> layout,
         std::vector<MemberTarget*> members);
  void DeriveCapabilities();
  Status CheckBlockAlignment() const;

  template <typename F>
  std::shared_ptr<Fanout> MakeFanout(F done, MemberOp op, uint64_t offset, uint64_t length);
  // Whether a member takes part in `op` (TRIM, CACHE, BLOCK_STATUS and FLUSH
  // skip members without the capability).
  bool Takes(uint32_t member, MemberOp op) const;
  // The largest piece of `op` a member gets.
  uint64_t PieceLimit(uint32_t member, MemberOp op) const;

  // Alignment to min_block.
  bool Aligned(uint64_t offset, uint64_t length) const;
  uint64_t AlignDown(uint64_t x) const { return x - x % caps_.min_block; }
  BlockSplit SplitAtBlocks(uint64_t offset, uint64_t length) const;

  // Runs a write, zero or trim of [offset, offset + length) that needs no
  // merge, ordered against merges; EndModifying undoes what it took.
  void StartModifying(const std::shared_ptr<Fanout>& fanout, uint64_t offset, uint64_t length);
  void EndModifying(const Fanout& fanout);
  // One counted modification (or the copies' barrier) is done.
  void EndCounted();
  // Takes the blocks of [offset, offset + length) exclusively for a merge.
  void LockForMerge(uint64_t offset, uint64_t length, RangeLock::Granted granted);
  void AcquireBlocks(uint64_t offset, uint64_t length, bool exclusive, RangeLock::Granted granted);

  void ReadUnaligned(uint64_t offset, uint64_t length, uint8_t* buf, Done done);
  // A write (src set) or WRITE_ZEROES (src null) with partial edge blocks:
  // locks its blocks, reads the partial ones whole, merges, writes them.
  void MergeEdges(MemberOp op, uint64_t offset, uint64_t length, const uint8_t* src, bool fua,
                  bool may_trim, Done done);
  void WriteMerged(const std::shared_ptr<Merge>& merge);

  std::string name_;
  std::string description_;
  std::unique_ptr<Layout> layout_;
  std::vector<MemberTarget*> members_;
  VolumeCapabilities caps_;

  // Ordering of merges against other modifications (see the top).
  RangeLock lock_;                                     // in units of min_block
  bool merging_ = false;                               // a merge has happened: modifications lock
  size_t unlocked_in_flight_ = 0;                      // modifications in flight that did not lock
  std::vector<std::function<void()>> after_unlocked_;  // merges waiting for those
  std::function<void(std::function<void()>)> first_merge_barrier_;  // see SetFirstMergeBarrier
};

}  // namespace dst::volume
