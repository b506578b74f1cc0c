#include "aggregator/integrity/checksummed_volume.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "common/join.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// Large enough for the partial blocks of a zero: less than two blocks.
constexpr size_t kZerosSize = 2 * kMaxBlockSize;

const uint8_t* Zeros() {
  static const std::vector<uint8_t> zeros(kZerosSize, 0);
  return zeros.data();
}

bool IsZero(const uint8_t* data, size_t length) {
  for (size_t at = 0; at < length; at += kZerosSize)
    if (std::memcmp(data + at, Zeros(), std::min<size_t>(kZerosSize, length - at)) != 0)
      return false;
  return true;
}

// TRIM and WRITE_ZEROES pin the table pages of what they cover: large ones
// (a whole-device discard) go in steps of this many bytes, one at a time.
constexpr uint64_t kZeroStepBytes = uint64_t{64} << 20;
// BLOCK_STATUS answers at most this much at once (NBD allows short answers).
constexpr uint64_t kStatusBytes = uint64_t{256} << 20;
// Recomputation reads dirty regions in slices of this size, a few at a time.
constexpr uint64_t kRecomputeSlice = uint64_t{4} << 20;
constexpr size_t kRecomputeParallel = 4;
constexpr auto kProgressInterval = std::chrono::seconds(2);

}  // namespace

struct ChecksummedVolume::Op {
  uint64_t first = 0;  // volume blocks [first, first + count)
  uint64_t count = 0;
  bool exclusive = false;
  std::vector<BlockRef> refs;
  std::vector<PageKey> pages;
  std::vector<RegionRef> regions;  // changes only
  RangeLock::Id lock = 0;
};

struct ChecksummedVolume::ReadOp : Op {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* buf = nullptr;
  ReadDone done;
  std::vector<uint8_t> staging;             // whole blocks, when the request is not aligned
  uint8_t* dest = nullptr;                  // buf or staging
  std::vector<bool> unwritten;              // per block: entry zero
  std::vector<std::span<uint8_t>> entries;  // per block, while pinned
};

struct ChecksummedVolume::WriteOp : Op {
  uint64_t offset = 0;
  uint64_t length = 0;
  const uint8_t* buf = nullptr;
  bool fua = false;
  Done done;
  std::vector<uint8_t> staging;  // whole blocks, when partial blocks are merged
  const uint8_t* source = nullptr;
};

Status ChecksummedVolume::Create(asio::io_context& io, std::vector<volume::MemberTarget*> members,
                                 std::vector<Superblock> superblocks, std::span<const uint8_t> key,
                                 ChecksumOptions options, std::unique_ptr<ChecksummedVolume>* out) {
  if (members.empty() || members.size() != superblocks.size())
    return Status::Invalid("a checksummed volume needs one superblock per member");
  const Superblock& first = superblocks[0];
  const uint32_t block_size = first.geometry.params.block_size;
  for (size_t m = 0; m < members.size(); ++m) {
    const Superblock& sb = superblocks[m];
    const volume::MemberCapabilities& caps = members[m]->capabilities();
    if (caps.size != sb.geometry.member_size)
      return Status::Invalid("member " + members[m]->name() + " has " + FormatSize(caps.size) +
                             " but was formatted with " + FormatSize(sb.geometry.member_size));
    if (caps.min_block > block_size)
      return Status::Invalid("member " + members[m]->name() + " needs " +
                             std::to_string(caps.min_block) + "-byte blocks, larger than the " +
                             "volume's " + std::to_string(block_size));
  }
  if (first.layout == volume::LayoutKind::kStripe && first.chunk_size % block_size != 0)
    return Status::Invalid("stripe chunk " + FormatSize(first.chunk_size) +
                           " is not a multiple of the block size " + FormatSize(block_size));
  Checksummer::Result ck = Checksummer::Create(first.geometry.params.algorithm, key);
  if (!ck.ok()) return ck.status;
  std::unique_ptr<ChecksummedVolume> volume(new ChecksummedVolume(
      io, std::move(members), std::move(superblocks), std::move(*ck.checksummer), options));
  std::vector<volume::MemberTarget*> views;
  for (size_t m = 0; m < volume->members_.size(); ++m) {
    volume->data_areas_.push_back(std::make_unique<DataAreaMember>(
        volume->members_[m], volume->superblocks_[m].geometry.data));
    views.push_back(volume->data_areas_.back().get());
  }
  DST_RETURN_IF_ERROR(volume::Volume::Create(first.name, options.description, first.layout,
                                             first.chunk_size, views, &volume->inner_));
  if (volume->inner_->size() != first.volume_size)
    return Status::Invalid("the members' data areas make " + FormatSize(volume->inner_->size()) +
                           ", but the superblocks say " + FormatSize(first.volume_size));
  volume->caps_ = volume->inner_->capabilities();
  volume->caps_.min_block = 1;  // partial blocks are read-modify-write
  volume->caps_.preferred_block = std::max(volume->caps_.preferred_block, block_size);
  volume->caps_.can_trim = true;  // the table forgets the blocks; members are zeroed
  volume->caps_.can_zero = true;
  volume->caps_.can_fast_zero = false;    // partial blocks are written, never fast
  volume->caps_.can_block_status = true;  // from the table
  *out = std::move(volume);
  return Status::Ok();
}

namespace {

std::vector<MemberGeometry> GeometriesOf(const std::vector<Superblock>& superblocks) {
  std::vector<MemberGeometry> geometries;
  for (const Superblock& sb : superblocks)
    geometries.push_back(sb.geometry);
  return geometries;
}

}  // namespace

ChecksummedVolume::ChecksummedVolume(asio::io_context& io,
                                     std::vector<volume::MemberTarget*> members,
                                     std::vector<Superblock> superblocks, Checksummer checksummer,
                                     ChecksumOptions options)
    : io_(io),
      members_(std::move(members)),
      superblocks_(std::move(superblocks)),
      checksummer_(std::move(checksummer)),
      options_(std::move(options)),
      block_size_(superblocks_[0].geometry.params.block_size),
      table_(members_, GeometriesOf(superblocks_), options_.table_cache_bytes),
      intent_(members_, GeometriesOf(superblocks_)),
      clean_timer_(io) {
  for (const Superblock& sb : superblocks_)
    activity_.emplace_back(sb.geometry.regions());
  member_checksum_errors_.assign(members_.size(), 0);
}

ChecksummedVolume::~ChecksummedVolume() {
  *alive_ = false;
}

// ---------------------------------------------------------------------------
// Mapping and checksums.

std::vector<ChecksummedVolume::BlockRef> ChecksummedVolume::MapBlocks(uint64_t first,
                                                                      uint64_t count) const {
  std::vector<BlockRef> refs;
  refs.reserve(count);
  for (const volume::MemberExtent& e :
       inner_->layout().Map(first * block_size_, count * block_size_))
    for (uint64_t at = 0; at < e.length; at += block_size_)
      refs.push_back({e.member, (e.member_offset + at) / block_size_});
  return refs;
}

std::vector<PageKey> ChecksummedVolume::PagesOf(const std::vector<BlockRef>& refs) const {
  std::vector<PageKey> pages;
  for (const BlockRef& ref : refs) {
    const PageKey key = table_.KeyOf(ref.member, ref.block);
    if (std::find(pages.begin(), pages.end(), key) == pages.end()) pages.push_back(key);
  }
  return pages;
}

std::vector<RegionRef> ChecksummedVolume::RegionsOf(const std::vector<BlockRef>& refs) const {
  std::vector<RegionRef> regions;
  for (const BlockRef& ref : refs) {
    const uint64_t region = ref.block * block_size_ / superblocks_[0].geometry.params.region_size;
    const RegionRef r{ref.member, region};
    if (std::find(regions.begin(), regions.end(), r) == regions.end()) regions.push_back(r);
  }
  return regions;
}

void ChecksummedVolume::CoverBlocks(Op& op, uint64_t offset, uint64_t length) const {
  op.first = offset / block_size_;
  op.count = (offset + length + block_size_ - 1) / block_size_ - op.first;
}

std::string ChecksummedVolume::BlockPlace(uint64_t volume_block, const BlockRef& ref) const {
  return "volume offset " + std::to_string(volume_block * block_size_) + " (member " +
         std::to_string(ref.member) + " " + members_[ref.member]->name() + ", data offset " +
         std::to_string(ref.block * block_size_) + ")";
}

bool ChecksummedVolume::EntryIsZero(const BlockRef& ref) {
  return IsZeroEntry(table_.Entry(ref.member, ref.block));
}

bool ChecksummedVolume::IsZeroEntry(std::span<const uint8_t> entry) {
  return std::all_of(entry.begin(), entry.end(), [](uint8_t b) { return b == 0; });
}

Digest ChecksummedVolume::ChecksumOf(uint64_t volume_block, const uint8_t* data) {
  return BlockChecksum(checksummer_, std::span<const uint8_t, 16>(superblocks_[0].volume_uuid),
                       volume_block, {data, block_size_});
}

bool ChecksummedVolume::Verify(uint64_t volume_block, const BlockRef& ref, const uint8_t* data) {
  return Verify(volume_block, table_.Entry(ref.member, ref.block), data);
}

bool ChecksummedVolume::Verify(uint64_t volume_block, std::span<const uint8_t> entry,
                               const uint8_t* data) {
  const Digest digest = ChecksumOf(volume_block, data);
  return std::memcmp(entry.data(), digest.bytes.data(), entry.size()) == 0;
}

// ---------------------------------------------------------------------------
// Request bookkeeping.

bool ChecksummedVolume::Admit(const std::function<void(int)>& fail) {
  if (!open_ || closing_) {
    fail(ESHUTDOWN);
    return false;
  }
  ++in_flight_;
  return true;
}

void ChecksummedVolume::Leave() {
  if (--in_flight_ == 0 && drained_) asio::post(io_, std::exchange(drained_, nullptr));
}

void ChecksummedVolume::Begin(const std::shared_ptr<Op>& op, bool exclusive,
                              std::function<void(int)> next) {
  op->exclusive = exclusive;
  op->refs = MapBlocks(op->first, op->count);
  op->pages = PagesOf(op->refs);
  if (exclusive) op->regions = RegionsOf(op->refs);
  lock_.Acquire(op->first, op->count, exclusive,
                [this, op, next = std::move(next)](RangeLock::Id id) mutable {
                  op->lock = id;
                  // Marked busy before the bits are ensured: the cleaner must
                  // not clear a bit a request is relying on.
                  for (const RegionRef& r : op->regions) {
                    ++activity_[r.member][r.region].active;
                    ++activity_[r.member][r.region].started;
                  }
                  auto join = MakeJoin(std::move(next));
                  table_.Pin(op->pages, Part(join));
                  if (!op->regions.empty()) intent_.Ensure(op->regions, Part(join));
                  join->Arrive(0);
                });
}

void ChecksummedVolume::End(const std::shared_ptr<Op>& op) {
  for (const RegionRef& r : op->regions)
    --activity_[r.member][r.region].active;
  table_.Unpin(op->pages);
  lock_.Release(op->lock);
  Leave();
}

// ---------------------------------------------------------------------------
// Reads.

void ChecksummedVolume::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  if (!Admit([&done](int err) { done(err, {}); })) return;
  auto op = std::make_shared<ReadOp>();
  op->offset = offset;
  op->length = length;
  op->buf = buf;
  op->done = std::move(done);
  CoverBlocks(*op, offset, length);
  Begin(op, false, [this, op](int err) {
    if (err != 0) return FinishRead(op, err);
    ReadData(op);
  });
}

void ChecksummedVolume::ReadData(const std::shared_ptr<ReadOp>& op) {
  const bool aligned = op->offset % block_size_ == 0 && op->length % block_size_ == 0;
  if (!aligned) op->staging.resize(op->count * block_size_);
  op->dest = aligned ? op->buf : op->staging.data();
  // Entries looked up once: pinned pages do not move until End().
  op->unwritten.resize(op->count);
  op->entries.reserve(op->count);
  for (uint64_t i = 0; i < op->count; ++i) {
    op->entries.push_back(table_.Entry(op->refs[i].member, op->refs[i].block));
    op->unwritten[i] = IsZeroEntry(op->entries[i]);
  }
  auto join = MakeJoin([this, op](int err) {
    if (err != 0) return FinishRead(op, err);
    VerifyRead(op);
  });
  // One member read per run of written blocks; unwritten ones are zeros.
  for (uint64_t i = 0; i < op->count;) {
    uint8_t* at = op->dest + i * block_size_;
    if (op->unwritten[i]) {
      std::memset(at, 0, block_size_);
      ++i;
      continue;
    }
    uint64_t end = i;
    while (end < op->count && !op->unwritten[end])
      ++end;
    inner_->ReadData((op->first + i) * block_size_, (end - i) * block_size_, at, Part(join));
    i = end;
  }
  join->Arrive(0);
}

void ChecksummedVolume::VerifyRead(const std::shared_ptr<ReadOp>& op) {
  std::vector<size_t> bad;
  for (uint64_t i = 0; i < op->count; ++i)
    if (!op->unwritten[i] && !Verify(op->first + i, op->entries[i], op->dest + i * block_size_))
      bad.push_back(i);
  if (bad.empty()) return FinishRead(op, 0);
  Reread(op, std::move(bad));
}

// Each block that failed verification is read once more, alone: a transient
// fault (a flipped bit on the wire, a member caught mid-rewrite by another
// aggregator) clears; a corrupted block fails again and the client gets EIO.
void ChecksummedVolume::Reread(const std::shared_ptr<ReadOp>& op, std::vector<size_t> bad) {
  auto join = MakeJoin([this, op](int err) { FinishRead(op, err); });
  for (size_t i : bad)
    ReadVerified(op->first + i, op->refs[i], op->dest + i * block_size_, true, op, Part(join));
  join->Arrive(0);
}

void ChecksummedVolume::ReadVerified(uint64_t block, const BlockRef& ref, uint8_t* dest,
                                     bool failed_before, std::shared_ptr<Op> keep, Done done) {
  inner_->ReadData(block * block_size_, block_size_, dest,
                   [this, block, ref, dest, failed_before, keep, done = std::move(done)](int err) {
                     if (err != 0) return done(err);
                     if (Verify(block, ref, dest)) {
                       if (failed_before) {
                         ++counters_.rereads_recovered;
                         LOG_WARNING("volume %s: checksum mismatch at %s cleared on re-read",
                                     name().c_str(), BlockPlace(block, ref).c_str());
                       }
                       return done(0);
                     }
                     if (!failed_before) return ReadVerified(block, ref, dest, true, keep, done);
                     ++counters_.checksum_errors;
                     ++member_checksum_errors_[ref.member];
                     LOG_ERROR("volume %s: checksum mismatch at %s, read twice: returning EIO",
                               name().c_str(), BlockPlace(block, ref).c_str());
                     done(EIO);
                   });
}

void ChecksummedVolume::FinishRead(const std::shared_ptr<ReadOp>& op, int err) {
  std::vector<volume::ByteRange> holes;
  if (err == 0) {
    if (!op->staging.empty())
      std::memcpy(op->buf, op->staging.data() + (op->offset - op->first * block_size_), op->length);
    const uint64_t end = op->offset + op->length;
    for (uint64_t i = 0; i < op->count;) {
      if (!op->unwritten[i]) {
        ++i;
        continue;
      }
      uint64_t run = i;
      while (run < op->count && op->unwritten[run])
        ++run;
      const uint64_t from = std::max(op->offset, (op->first + i) * block_size_);
      const uint64_t to = std::min(end, (op->first + run) * block_size_);
      holes.push_back({from, to - from});
      i = run;
    }
  }
  End(op);
  op->done(err, std::move(holes));
}

// ---------------------------------------------------------------------------
// Writes.

void ChecksummedVolume::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua,
                              Done done) {
  if (!Admit(done)) return;
  auto op = std::make_shared<WriteOp>();
  op->offset = offset;
  op->length = length;
  op->buf = buf;
  op->fua = fua;
  op->done = std::move(done);
  CoverBlocks(*op, offset, length);
  Begin(op, true, [this, op](int err) {
    if (err != 0) {
      End(op);
      return op->done(err);
    }
    MergePartialBlocks(op);
  });
}

// A write that covers blocks only partly is widened to whole blocks: the
// missing parts are read (and verified) first. Unwritten blocks are zeros.
void ChecksummedVolume::MergePartialBlocks(const std::shared_ptr<WriteOp>& op) {
  const bool head = op->offset % block_size_ != 0;
  const bool tail = (op->offset + op->length) % block_size_ != 0;
  if (!head && !tail) {
    op->source = op->buf;
    return WriteData(op);
  }
  op->staging.resize(op->count * block_size_);
  op->source = op->staging.data();
  std::vector<size_t> edges;
  if (head) edges.push_back(0);
  if (tail && (op->count > 1 || !head)) edges.push_back(op->count - 1);
  auto join = MakeJoin([this, op](int err) {
    if (err != 0) {
      End(op);
      return op->done(err);
    }
    std::memcpy(op->staging.data() + (op->offset - op->first * block_size_), op->buf, op->length);
    WriteData(op);
  });
  for (size_t i : edges) {
    ++counters_.rmw_blocks;
    uint8_t* at = op->staging.data() + i * block_size_;
    if (EntryIsZero(op->refs[i])) {
      std::memset(at, 0, block_size_);
      continue;
    }
    // Merging into a block that does not verify would give the corruption a
    // fresh, valid checksum: the write fails instead.
    ReadVerified(op->first + i, op->refs[i], at, false, op, Part(join));
  }
  join->Arrive(0);
}

void ChecksummedVolume::WriteData(const std::shared_ptr<WriteOp>& op) {
  auto digests = std::make_shared<std::vector<Digest>>();
  digests->reserve(op->count);
  for (uint64_t i = 0; i < op->count; ++i)
    digests->push_back(ChecksumOf(op->first + i, op->source + i * block_size_));
  inner_->Write(op->first * block_size_, op->count * block_size_, op->source, op->fua,
                [this, op, digests](int err) {
                  // On failure the entries keep the old checksums: whatever
                  // the member holds now reads back only if it is the old data.
                  if (err == 0) {
                    for (uint64_t i = 0; i < op->count; ++i) {
                      const std::span<uint8_t> entry =
                          table_.Entry(op->refs[i].member, op->refs[i].block);
                      std::memcpy(entry.data(), (*digests)[i].bytes.data(), entry.size());
                    }
                    for (const PageKey& key : op->pages)
                      table_.MarkDirty(key);
                  }
                  End(op);
                  op->done(err);
                });
}

// ---------------------------------------------------------------------------
// Trim, zero, flush, cache, block status.

void ChecksummedVolume::Flush(Done done) {
  if (!Admit(done)) return;
  inner_->Flush([this, done = std::move(done)](int err) {
    Leave();
    done(err);
  });
}

void ChecksummedVolume::Trim(uint64_t offset, uint64_t length, bool fua, Done done) {
  // Only whole blocks are forgotten; trimming part of a block is a no-op,
  // which TRIM's advisory nature allows.
  if (!Admit(done)) return;
  const uint64_t first = (offset + block_size_ - 1) / block_size_;
  const uint64_t end = (offset + length) / block_size_;
  if (end <= first) {
    Leave();
    return done(0);
  }
  ZeroBlocks(first, end - first, true, fua, [this, done = std::move(done)](int err) {
    Leave();
    done(err);
  });
}

void ChecksummedVolume::Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only,
                             bool fua, Done done) {
  if (!Admit(done)) return;
  if (fast_only) {  // not advertised; a client sending it anyway
    Leave();
    return done(ENOTSUP);
  }
  auto join = MakeJoin([this, done = std::move(done)](int err) {
    Leave();
    done(err);
  });
  const uint64_t end = offset + length;
  const uint64_t first = (offset + block_size_ - 1) / block_size_;
  const uint64_t last = end / block_size_;  // whole blocks: [first, last)
  if (last <= first) {
    Write(offset, length, Zeros(), fua, Part(join));  // inside one or two blocks
  } else {
    if (offset < first * block_size_)
      Write(offset, first * block_size_ - offset, Zeros(), fua, Part(join));
    ZeroBlocks(first, last - first, may_trim, fua, Part(join));
    if (last * block_size_ < end)
      Write(last * block_size_, end - last * block_size_, Zeros(), fua, Part(join));
  }
  join->Arrive(0);
}

void ChecksummedVolume::ZeroBlocks(uint64_t first, uint64_t count, bool may_trim, bool fua,
                                   Done done) {
  const uint64_t step = std::max<uint64_t>(1, kZeroStepBytes / block_size_);
  const uint64_t n = std::min(count, step);
  ZeroStep(first, n, may_trim, fua,
           [this, first, count, n, may_trim, fua, done = std::move(done)](int err) mutable {
             if (err != 0 || n == count) return done(err);
             ZeroBlocks(first + n, count - n, may_trim, fua, std::move(done));
           });
}

void ChecksummedVolume::ZeroStep(uint64_t first, uint64_t count, bool may_trim, bool fua,
                                 Done done) {
  auto op = std::make_shared<Op>();
  op->first = first;
  op->count = count;
  ++in_flight_;  // a request of its own: End() leaves
  Begin(op, true, [this, op, first, count, may_trim, fua, done = std::move(done)](int err) mutable {
    if (err != 0) {
      End(op);
      return done(err);
    }
    // The members' blocks are zeroed, not merely forgotten: after a crash the
    // checksums of dirty regions are recomputed from the data, and a block
    // that still held its old data would come back.
    inner_->Zero(first * block_size_, count * block_size_, may_trim, false, fua,
                 [this, op, done = std::move(done)](int zero_err) {
                   if (zero_err == 0) {
                     for (const BlockRef& ref : op->refs) {
                       const std::span<uint8_t> entry = table_.Entry(ref.member, ref.block);
                       std::fill(entry.begin(), entry.end(), 0);
                     }
                     for (const PageKey& key : op->pages)
                       table_.MarkDirty(key);
                   }
                   End(op);
                   done(zero_err);
                 });
  });
}

void ChecksummedVolume::Cache(uint64_t offset, uint64_t length, Done done) {
  if (!Admit(done)) return;
  inner_->Cache(offset, length, [this, done = std::move(done)](int err) {
    Leave();
    done(err);
  });
}

void ChecksummedVolume::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  if (!Admit([&done](int err) { done(err, {}); })) return;
  length = std::min(length, kStatusBytes);
  auto op = std::make_shared<Op>();
  CoverBlocks(*op, offset, length);
  Begin(op, false, [this, op, offset, length, done = std::move(done)](int err) {
    std::vector<volume::AllocationExtent> extents;
    if (err == 0) {
      const uint64_t end = offset + length;
      for (uint64_t i = 0; i < op->count; ++i) {
        const uint32_t flags = EntryIsZero(op->refs[i]) ? 3u : 0u;  // HOLE | ZERO
        const uint64_t from = std::max(offset, (op->first + i) * block_size_);
        const uint64_t to = std::min(end, (op->first + i + 1) * block_size_);
        if (!extents.empty() && extents.back().flags == flags)
          extents.back().length += to - from;
        else
          extents.push_back({to - from, flags});
      }
    }
    End(op);
    done(err, std::move(extents));
  });
}

// ---------------------------------------------------------------------------
// Superblocks, open, clean, close.

void ChecksummedVolume::WriteSuperblocks(VolumeState state, Done done) {
  uint64_t event = 0;
  for (const Superblock& sb : superblocks_)
    event = std::max(event, sb.event);
  ++event;
  auto updated = std::make_shared<std::vector<Superblock>>(superblocks_);
  auto join = MakeJoin([this, alive = alive_, updated, done = std::move(done)](int err) {
    if (!*alive) return;
    if (err == 0) superblocks_ = *updated;
    done(err);
  });
  for (size_t m = 0; m < members_.size(); ++m) {
    Superblock& sb = (*updated)[m];
    sb.event = event;
    sb.state = state;
    auto slot = std::make_shared<std::vector<uint8_t>>(kSlotSize);
    if (Status s = Encode(sb, std::span<uint8_t, kSlotSize>(slot->data(), kSlotSize)); !s.ok()) {
      LOG_ERROR("volume %s: superblock of member %zu: %s", name().c_str(), m, s.message().c_str());
      Part(join)(s.err());
      continue;
    }
    volume::MemberTarget* member = members_[m];
    auto write = std::make_shared<volume::MemberIo>();
    write->op = volume::MemberOp::kWrite;
    write->offset = SlotOffset(NextSlot(event));
    write->length = kSlotSize;
    write->data = slot->data();
    // Current only once flushed: the other slot stays the fallback until then.
    write->done = [member, slot, part = Part(join)](int err) {
      if (err != 0 || !member->capabilities().can_flush) return part(err);
      auto flush = std::make_shared<volume::MemberIo>();
      flush->op = volume::MemberOp::kFlush;
      flush->done = part;
      member->Submit(std::move(flush));
    };
    member->Submit(std::move(write));
  }
  join->Arrive(0);
}

void ChecksummedVolume::Open(Done done) {
  unclean_at_open_ =
      std::any_of(superblocks_.begin(), superblocks_.end(),
                  [](const Superblock& sb) { return sb.state == VolumeState::kDirty; });
  intent_.Load([this, done = std::move(done)](int err) mutable {
    if (err != 0) {
      LOG_ERROR("volume %s: reading the write-intent bitmaps: %s", name().c_str(),
                std::strerror(err));
      return done(err);
    }
    WriteSuperblocks(VolumeState::kDirty, [this, done = std::move(done)](int sb_err) mutable {
      if (sb_err != 0) {
        LOG_ERROR("volume %s: marking the superblocks dirty: %s", name().c_str(),
                  std::strerror(sb_err));
        return done(sb_err);
      }
      RecomputeDirtyRegions([this, done = std::move(done)](int rc_err) {
        if (rc_err == 0) {
          open_ = true;
          ScheduleClean();
        }
        done(rc_err);
      });
    });
  });
}

// Recomputes the checksum entries of every region whose write-intent bit is
// set, from the data the members hold: blocks of zeros become unwritten
// (entry zero), every other block gets the checksum of what it holds.
class ChecksummedVolume::Recompute : public std::enable_shared_from_this<Recompute> {
 public:
  struct Slice {
    uint32_t member;
    uint64_t offset;  // in the member's data area
    uint64_t length;
  };

  Recompute(ChecksummedVolume& volume, std::vector<Slice> slices, Done done)
      : v_(volume), slices_(std::move(slices)), done_(std::move(done)) {
    for (const Slice& s : slices_)
      total_bytes_ += s.length;
    progress_.emplace("volume " + v_.name() + ": recomputing checksums", total_bytes_,
                      Progress::StderrIsTerminal(), kProgressInterval);
  }
  uint64_t total_bytes() const { return total_bytes_; }

  void Start() {
    started_ = std::chrono::steady_clock::now();
    for (size_t i = 0; i < kRecomputeParallel; ++i)
      Next();
    if (slices_.empty()) Finish();
  }

 private:
  void Next() {
    if (next_ >= slices_.size()) return;
    const Slice slice = slices_[next_++];
    ++running_;
    auto buffer = std::make_shared<std::vector<uint8_t>>(slice.length);
    auto self = shared_from_this();
    v_.data_areas_[slice.member]->Submit(MakeRead(slice, buffer, [self, slice, buffer](int err) {
      if (err != 0) return self->SliceDone(slice, err);
      self->Apply(slice, buffer);
    }));
  }

  std::shared_ptr<volume::MemberIo> MakeRead(const Slice& slice,
                                             const std::shared_ptr<std::vector<uint8_t>>& buffer,
                                             std::function<void(int)> done) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = slice.offset;
    io->length = slice.length;
    io->data = buffer->data();
    io->done = std::move(done);
    return io;
  }

  void Apply(const Slice& slice, const std::shared_ptr<std::vector<uint8_t>>& buffer) {
    const uint32_t bs = v_.block_size_;
    auto refs = std::make_shared<std::vector<BlockRef>>();
    for (uint64_t at = 0; at < slice.length; at += bs)
      refs->push_back({slice.member, (slice.offset + at) / bs});
    auto pages = std::make_shared<std::vector<PageKey>>(v_.PagesOf(*refs));
    auto self = shared_from_this();
    v_.table_.Pin(*pages, [self, slice, buffer, refs, pages](int err) {
      ChecksummedVolume& v = self->v_;
      if (err == 0) {
        const uint32_t bs = v.block_size_;
        const volume::Layout& layout = v.inner_->layout();
        for (size_t i = 0; i < refs->size(); ++i) {
          const uint8_t* data = buffer->data() + i * bs;
          const std::span<uint8_t> entry = v.table_.Entry(slice.member, (*refs)[i].block);
          if (IsZero(data, bs)) {
            std::fill(entry.begin(), entry.end(), 0);
            continue;
          }
          const uint64_t block = layout.VolumeOffset(slice.member, (*refs)[i].block * bs) / bs;
          const Digest digest = v.ChecksumOf(block, data);
          std::memcpy(entry.data(), digest.bytes.data(), entry.size());
        }
        for (const PageKey& key : *pages)
          v.table_.MarkDirty(key);
      }
      v.table_.Unpin(*pages);
      self->SliceDone(slice, err);
    });
  }

  void SliceDone(const Slice& slice, int err) {
    --running_;
    if (err != 0 && error_ == 0) {
      error_ = err;
      LOG_ERROR("volume %s: recomputing checksums of member %u at data offset %llu: %s",
                v_.name().c_str(), slice.member, static_cast<unsigned long long>(slice.offset),
                std::strerror(err));
    }
    done_bytes_ += slice.length;
    v_.counters_.recomputed_bytes += slice.length;
    progress_->Update(done_bytes_);
    if (error_ == 0) Next();
    if (running_ == 0 && (error_ != 0 || next_ >= slices_.size())) Finish();
  }

  void Finish() {
    progress_->Clear();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (error_ == 0)
      LOG_INFO("volume %s: recomputed the checksums of %llu dirty regions (%s) in %.1f s",
               v_.name().c_str(), static_cast<unsigned long long>(v_.counters_.recomputed_regions),
               FormatSize(total_bytes_).c_str(), seconds);
    done_(error_);
  }

  ChecksummedVolume& v_;
  std::vector<Slice> slices_;
  Done done_;
  size_t next_ = 0;
  size_t running_ = 0;
  int error_ = 0;
  uint64_t total_bytes_ = 0;
  uint64_t done_bytes_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::optional<Progress> progress_;
};

void ChecksummedVolume::RecomputeDirtyRegions(Done done) {
  const uint64_t region_size = superblocks_[0].geometry.params.region_size;
  std::vector<Recompute::Slice> slices;
  uint64_t regions = 0, total_regions = 0;
  for (uint32_t m = 0; m < members_.size(); ++m) {
    // Only the part of the data area the layout uses has volume addresses.
    const uint64_t usable = inner_->layout().member_usable_size(m);
    const uint64_t slice_size =
        std::min<uint64_t>(kRecomputeSlice, members_[m]->capabilities().max_request);
    total_regions += superblocks_[m].geometry.regions();
    for (uint64_t region : intent_.SetRegions(m)) {
      const uint64_t from = region * region_size;
      const uint64_t to = std::min(from + region_size, usable);
      if (from >= to) continue;
      ++regions;
      for (uint64_t at = from; at < to; at += slice_size)
        slices.push_back({m, at, std::min(slice_size, to - at)});
    }
  }
  const bool unclean = unclean_at_open_;
  if (slices.empty()) {
    if (unclean) LOG_INFO("volume %s: unclean stop, but no region was dirty", name().c_str());
    return done(0);
  }
  counters_.recomputed_regions = regions;
  auto recompute = std::make_shared<Recompute>(*this, std::move(slices), std::move(done));
  LOG_INFO("volume %s: %s: recomputing the checksums of %llu of %llu regions (%s)", name().c_str(),
           unclean ? "unclean stop" : "write-intent bits set on a clean volume",
           static_cast<unsigned long long>(regions), static_cast<unsigned long long>(total_regions),
           FormatSize(recompute->total_bytes()).c_str());
  recompute->Start();
}

void ChecksummedVolume::ScheduleClean() {
  clean_timer_.expires_after(options_.clean_interval);
  clean_timer_.async_wait([this, alive = alive_](const asio::error_code& ec) {
    if (ec || !*alive || closing_) return;
    if (table_.dirty_pages() == 0 && intent_.set_count() == 0) return ScheduleClean();
    Clean([this, alive](int) {
      if (*alive && !closing_) ScheduleClean();
    });
  });
}

void ChecksummedVolume::Clean(Done done) {
  if (cleaning_) {
    after_clean_.push_back([this, done = std::move(done)]() mutable { Clean(std::move(done)); });
    return;
  }
  cleaning_ = true;
  struct Candidate {
    RegionRef region;
    uint32_t started;
  };
  auto candidates = std::make_shared<std::vector<Candidate>>();
  for (uint32_t m = 0; m < members_.size(); ++m)
    for (uint64_t r : intent_.SetRegions(m))
      if (activity_[m][r].active == 0) candidates->push_back({{m, r}, activity_[m][r].started});
  auto finish = [this, alive = alive_, done = std::move(done)](int err) {
    if (!*alive) return;
    if (err != 0)
      LOG_ERROR("volume %s: writing checksums back: %s", name().c_str(), std::strerror(err));
    cleaning_ = false;
    auto waiting = std::move(after_clean_);
    done(err);
    for (auto& w : waiting)
      w();
  };
  table_.WriteBack([this, alive = alive_, candidates, finish](int err) {
    if (!*alive) return;
    if (err != 0) return finish(err);
    // Data and checksums of the idle regions are both on the members now;
    // after the flush they are durable and the bits may go.
    inner_->Flush([this, alive, candidates, finish](int flush_err) {
      if (!*alive) return;
      if (flush_err != 0) return finish(flush_err);
      for (const Candidate& c : *candidates) {
        const RegionActivity& a = activity_[c.region.member][c.region.region];
        if (a.active == 0 && a.started == c.started)
          intent_.Clear(c.region.member, c.region.region);
      }
      intent_.Sync(finish);
    });
  });
}

void ChecksummedVolume::Close(Done done) {
  if (!open_ || closing_) return done(0);
  closing_ = true;
  clean_timer_.cancel();
  drained_ = [this, done = std::move(done)]() mutable {
    Clean([this, done = std::move(done)](int err) mutable {
      if (err != 0 || intent_.set_count() != 0) {
        LOG_ERROR("volume %s: could not stop clean; the next start recomputes dirty regions",
                  name().c_str());
        return done(err != 0 ? err : EIO);
      }
      WriteSuperblocks(VolumeState::kClean, [this, done = std::move(done)](int sb_err) {
        if (sb_err == 0)
          LOG_INFO("volume %s: stopped clean", name().c_str());
        else
          LOG_ERROR("volume %s: marking the superblocks clean: %s", name().c_str(),
                    std::strerror(sb_err));
        done(sb_err);
      });
    });
  };
  if (in_flight_ == 0) asio::post(io_, std::exchange(drained_, nullptr));
}

std::string ChecksummedVolume::StatsLine() const {
  const TableCacheCounters& t = table_.counters();
  auto u = [](uint64_t v) { return std::to_string(v); };
  return std::string("state=") + std::string(VolumeStateName(superblocks_[0].state)) +
         " checksum_errors=" + u(counters_.checksum_errors) +
         " rereads_recovered=" + u(counters_.rereads_recovered) +
         " rmw_blocks=" + u(counters_.rmw_blocks) +
         " recomputed_regions=" + u(counters_.recomputed_regions) +
         " dirty_regions=" + u(intent_.set_count()) + " bitmap_syncs=" + u(intent_.syncs()) +
         " table_pages=" + u(table_.cached_pages()) + " table_dirty=" + u(table_.dirty_pages()) +
         " table_loads=" + u(t.loads) + " table_writebacks=" + u(t.writebacks) +
         " table_evictions=" + u(t.evictions) + " table_errors=" + u(t.errors);
}

}  // namespace dst::integrity
