// Volume: unaligned requests (read-modify-write of partial blocks) and the
// ordering of other modifications against them. See volume.h.
#include <algorithm>
#include <cstring>

#include "aggregator/volume/fanout.h"
#include "aggregator/volume/volume.h"

namespace dst::volume {

// Ordering modifications against merges.

void Volume::StartModifying(const std::shared_ptr<Fanout>& fanout, uint64_t offset,
                            uint64_t length) {
  // Until a merge has happened (and with no minimum block, none ever does),
  // a modification is only counted: no lock, no allocation.
  if (!merging_ || length == 0) {
    fanout->guard = Fanout::Guard::kCounted;
    ++unlocked_in_flight_;
    return fanout->Start();
  }
  AcquireBlocks(offset, length, false, [fanout](RangeLock::Id id) {
    fanout->guard = Fanout::Guard::kLocked;
    fanout->lock = id;
    fanout->Start();
  });
}

void Volume::EndModifying(const Fanout& fanout) {
  if (fanout.guard == Fanout::Guard::kLocked) return lock_.Release(fanout.lock);
  if (fanout.guard == Fanout::Guard::kCounted) EndCounted();
}

void Volume::EndCounted() {
  if (--unlocked_in_flight_ > 0 || after_unlocked_.empty()) return;
  std::vector<std::function<void()>> waiting;
  waiting.swap(after_unlocked_);
  for (auto& merge : waiting)
    merge();
}

void Volume::LockForMerge(uint64_t offset, uint64_t length, RangeLock::Granted granted) {
  merging_ = true;  // from now on, modifications lock their blocks
  if (first_merge_barrier_) {
    // The copies' writes in flight count as one of ours until they are done.
    auto barrier = std::move(first_merge_barrier_);
    first_merge_barrier_ = nullptr;
    ++unlocked_in_flight_;
    barrier([this] { EndCounted(); });
  }
  // Those that started without a lock cannot be waited for in the lock.
  if (unlocked_in_flight_ > 0) {
    after_unlocked_.push_back([this, offset, length, granted = std::move(granted)]() mutable {
      LockForMerge(offset, length, std::move(granted));
    });
    return;
  }
  AcquireBlocks(offset, length, true, std::move(granted));
}

void Volume::AcquireBlocks(uint64_t offset, uint64_t length, bool exclusive,
                           RangeLock::Granted granted) {
  const uint64_t block = caps_.min_block;
  const uint64_t first = offset / block;
  const uint64_t end = (offset + length + block - 1) / block;
  lock_.Acquire(first, std::max<uint64_t>(end - first, 1), exclusive, std::move(granted));
}

// ---------------------------------------------------------------------------
// Unaligned requests.

Volume::BlockSplit Volume::SplitAtBlocks(uint64_t offset, uint64_t length) const {
  const uint64_t block = caps_.min_block;
  const uint64_t end = offset + length;
  const uint64_t first = AlignDown(offset);
  const uint64_t last = AlignDown(end - 1);  // the last block's offset
  const auto whole = [&](uint64_t at) { return ByteRange{at, std::min(block, size() - at)}; };
  BlockSplit split{};
  if (first == last) {
    split.head = whole(first);  // one block, partly covered
    return split;
  }
  uint64_t middle_start = first;
  uint64_t middle_end = last + whole(last).length;
  if (offset != first) {
    split.head = whole(first);
    middle_start += block;
  }
  if (end != middle_end) {
    split.tail = whole(last);
    middle_end = last;
  }
  split.middle = {middle_start, middle_end - middle_start};
  return split;
}

namespace {

// The part of `block` that [offset, end) covers, as (offset in the block,
// offset in the request, length).
struct Overlap {
  uint64_t in_block, in_request, length;
};
Overlap OverlapOf(const ByteRange& block, uint64_t offset, uint64_t end) {
  const uint64_t from = std::max(block.offset, offset);
  const uint64_t to = std::min(block.offset + block.length, end);
  return {from - block.offset, from - offset, to - from};
}

}  // namespace

// The edge blocks are read whole into a staging buffer and what was asked is
// copied out; the whole blocks between them are read in place.
void Volume::ReadUnaligned(uint64_t offset, uint64_t length, uint8_t* buf, Done done) {
  const BlockSplit split = SplitAtBlocks(offset, length);
  std::vector<uint8_t> edges(split.head.length + split.tail.length);
  uint8_t* staging = edges.data();  // stays put: the vector's buffer moves with it
  auto copy_out = [split, offset, length, buf, edges = std::move(edges),
                   done = std::move(done)](int err) {
    const uint64_t end = offset + length;
    if (err == 0 && split.head.length > 0) {
      const Overlap o = OverlapOf(split.head, offset, end);
      std::memcpy(buf + o.in_request, edges.data() + o.in_block, o.length);
    }
    if (err == 0 && split.tail.length > 0) {
      const Overlap o = OverlapOf(split.tail, offset, end);
      std::memcpy(buf + o.in_request, edges.data() + split.head.length + o.in_block, o.length);
    }
    done(err);
  };
  auto fanout = MakeFanout(std::move(copy_out), MemberOp::kRead, offset, length);
  if (split.head.length > 0)
    fanout->Add({MemberOp::kRead, split.head.offset, split.head.length, staging});
  if (split.middle.length > 0)
    fanout->Add({MemberOp::kRead, split.middle.offset, split.middle.length,
                 buf + (split.middle.offset - offset)});
  if (split.tail.length > 0)
    fanout->Add(
        {MemberOp::kRead, split.tail.offset, split.tail.length, staging + split.head.length});
  fanout->Start();
}

// A write or WRITE_ZEROES with partial blocks at its edges, from lock to done.
struct Volume::Merge {
  MemberOp op;  // kWrite or kZero: what the client asked
  uint64_t offset;
  uint64_t length;
  const uint8_t* src;  // kWrite: the client's bytes
  bool fua;
  bool may_trim;
  Done done;
  BlockSplit split;
  RangeLock::Id lock;
  std::vector<uint8_t> edges;  // the head block, then the tail block
};

void Volume::MergeEdges(MemberOp op, uint64_t offset, uint64_t length, const uint8_t* src, bool fua,
                        bool may_trim, Done done) {
  auto merge = std::make_shared<Merge>(Merge{op,
                                             offset,
                                             length,
                                             src,
                                             fua,
                                             may_trim,
                                             std::move(done),
                                             SplitAtBlocks(offset, length),
                                             0,
                                             {}});
  const BlockSplit& s = merge->split;
  const uint64_t start = s.head.length > 0 ? s.head.offset : s.middle.offset;
  const uint64_t end = s.tail.length > 0     ? s.tail.offset + s.tail.length
                       : s.middle.length > 0 ? s.middle.offset + s.middle.length
                                             : s.head.offset + s.head.length;
  LockForMerge(start, end - start, [this, merge](RangeLock::Id id) {
    merge->lock = id;
    const BlockSplit& split = merge->split;
    merge->edges.resize(split.head.length + split.tail.length);
    auto fanout = MakeFanout(
        [this, merge](int err) {
          if (err == 0) return WriteMerged(merge);
          lock_.Release(merge->lock);
          merge->done(err);
        },
        merge->op, merge->offset, merge->length);
    if (split.head.length > 0)
      fanout->Add({MemberOp::kRead, split.head.offset, split.head.length, merge->edges.data()});
    if (split.tail.length > 0)
      fanout->Add({MemberOp::kRead, split.tail.offset, split.tail.length,
                   merge->edges.data() + split.head.length});
    fanout->Start();
  });
}

// Puts the client's bytes (or zeros) into the edge blocks and writes them
// whole, with the middle as the client sent it; the lock goes with the last part.
void Volume::WriteMerged(const std::shared_ptr<Merge>& merge) {
  const BlockSplit& s = merge->split;
  const uint64_t end = merge->offset + merge->length;
  const auto place = [&](const ByteRange& block, uint8_t* at) {
    const Overlap o = OverlapOf(block, merge->offset, end);
    if (merge->src)
      std::memcpy(at + o.in_block, merge->src + o.in_request, o.length);
    else
      std::memset(at + o.in_block, 0, o.length);
  };
  uint8_t* head = merge->edges.data();
  uint8_t* tail = head + s.head.length;
  if (s.head.length > 0) place(s.head, head);
  if (s.tail.length > 0) place(s.tail, tail);
  auto fanout =
      MakeFanout([merge](int err) { merge->done(err); }, merge->op, merge->offset, merge->length);
  fanout->fua = merge->fua;
  fanout->may_trim = merge->may_trim;
  fanout->guard = Fanout::Guard::kLocked;
  fanout->lock = merge->lock;
  if (s.head.length > 0) fanout->Add({MemberOp::kWrite, s.head.offset, s.head.length, head});
  if (s.middle.length > 0) {
    uint8_t* middle =
        merge->src ? const_cast<uint8_t*>(merge->src) + (s.middle.offset - merge->offset)  // read
                   : nullptr;
    fanout->Add({merge->op, s.middle.offset, s.middle.length, middle});
  }
  if (s.tail.length > 0) fanout->Add({MemberOp::kWrite, s.tail.offset, s.tail.length, tail});
  fanout->Start();
}

}  // namespace dst::volume
