// The request path of ChecksummedVolume: every client request, from the range
// lock to the reply, and the block mapping and verification it rests on.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/checksummed_volume.h"
#include "common/join.h"
#include "common/log.h"

namespace dst::integrity {

namespace {

// Large enough for the partial blocks of a zero: less than two blocks.
constexpr size_t kZerosSize = 2 * kMaxBlockSize;

const uint8_t* Zeros() {
  static const std::vector<uint8_t> zeros(kZerosSize, 0);
  return zeros.data();
}

// TRIM and WRITE_ZEROES pin the table pages of what they cover: large ones
// (a whole-device discard) go in steps of this many bytes, one at a time.
constexpr uint64_t kZeroStepBytes = uint64_t{64} << 20;
// BLOCK_STATUS answers at most this much at once (NBD allows short answers).
constexpr uint64_t kStatusBytes = uint64_t{256} << 20;

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
    const uint64_t region = ref.block * block_size_ / view_.geometry.params.region_size;
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
  if (redundant())  // the set's name lists its copies
    return "volume offset " + std::to_string(volume_block * block_size_) + " (" +
           members_[ref.member]->name() + ", data offset " +
           std::to_string(ref.block * block_size_) + ")";
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
  return BlockChecksum(checksummer_, std::span<const uint8_t, 16>(view_.volume_uuid), volume_block,
                       {data, block_size_});
}

uint64_t WorkerMinBytes(ChecksumAlgorithm algorithm) {
  return algorithm == ChecksumAlgorithm::kCrc32c ? kWorkerMinBytesCrc32c : kWorkerMinBytes;
}

Digest ChecksummedVolume::WorkerCrypto::ChecksumOf(size_t worker, uint64_t volume_block,
                                                   const uint8_t* data) {
  return BlockChecksum(workers[worker].checksummer, std::span<const uint8_t, 16>(volume_uuid),
                       volume_block, {data, block_size});
}

bool ChecksummedVolume::OnWorkers(uint64_t blocks) const {
  return worker_crypto_ != nullptr &&
         blocks * block_size_ >= WorkerMinBytes(view_.geometry.params.algorithm);
}

bool ChecksummedVolume::Verify(uint64_t volume_block, const BlockRef& ref, const uint8_t* data) {
  return Verify(volume_block, table_.Entry(ref.member, ref.block), data);
}

bool ChecksummedVolume::Verify(uint64_t volume_block, std::span<const uint8_t> entry,
                               const uint8_t* data) {
  return ChecksumOf(volume_block, data).Matches(entry);
}

// Encrypted volumes: blocks are ciphertext on the members, verified before
// they are decrypted and encrypted before they are checksummed
// (encrypt-then-MAC). Holes (entry zero) never reach the cipher.
void ChecksummedVolume::Decrypt(uint64_t first_block, uint8_t* data,
                                const std::vector<bool>& skip) {
  for (uint64_t i = 0; i < skip.size(); ++i)
    if (!skip[i]) DecryptBlock(first_block + i, data + i * block_size_);
}

void ChecksummedVolume::DecryptBlock(uint64_t volume_block, uint8_t* data) {
  const std::span<uint8_t> block(data, block_size_);
  // Only a block size that is not a multiple of 16 fails, and the format has none.
  (void)cipher_->Decrypt(volume_block, block, block);
}

void ChecksummedVolume::Encrypt(uint64_t first_block, uint64_t count, const uint8_t* in,
                                uint8_t* out) {
  for (uint64_t i = 0; i < count; ++i)
    (void)cipher_->Encrypt(first_block + i, {in + i * block_size_, block_size_},
                           {out + i * block_size_, block_size_});
}

// ---------------------------------------------------------------------------
// Request bookkeeping.

// A superseded volume (a newer owner fenced it out) refuses changes with
// EROFS (EPERM on the wire, NBD's answer to a write on a read-only export)
// and reads with ESHUTDOWN: its table cache holds this aggregator's
// checksums, not the new owner's, and could vouch for overwritten data.
bool ChecksummedVolume::Admit(const std::function<void(int)>& fail, Access access) {
  if (!open_ || closing_) {
    fail(ESHUTDOWN);
    return false;
  }
  if (superseded_) {
    fail(access == Access::kChange ? EROFS : ESHUTDOWN);
    return false;
  }
  ++in_flight_;
  jobs_.ClientStarted();
  return true;
}

void ChecksummedVolume::Leave() {
  jobs_.ClientFinished();
  LeaveInternal();
}

void ChecksummedVolume::LeaveInternal() {
  if (--in_flight_ == 0 && drained_) asio::post(io_, std::exchange(drained_, nullptr));
}

void ChecksummedVolume::Begin(const std::shared_ptr<Op>& op, bool exclusive,
                              Callback<void(int)> next) {
  op->exclusive = exclusive;
  op->refs = MapBlocks(op->first, op->count);
  op->pages = PagesOf(op->refs);
  if (exclusive) op->regions = RegionsOf(op->refs);
  lock_.Acquire(op->first, op->count, exclusive,
                [this, op, next = std::move(next)](RangeLock::Id id) mutable {
                  op->lock = id;
                  // Marked busy before the bits are ensured: the cleaner must
                  // not clear a bit a request is relying on.
                  for (const RegionRef& r : op->regions)
                    activity_.Begin(r);
                  auto join = MakeJoin(std::move(next));
                  table_.Pin(op->pages, Part(join));
                  if (!op->regions.empty())
                    AwaitDurableDemotions(op->refs, [this, op, ensured = Part(join)](int err) {
                      if (err != 0) return ensured(err);
                      intent_.Ensure(op->regions, ensured);
                    });
                  join->Arrive(0);
                });
}

void ChecksummedVolume::End(const std::shared_ptr<Op>& op) {
  for (const RegionRef& r : op->regions)
    activity_.End(r);
  table_.Unpin(op->pages);
  lock_.Release(op->lock);
  Leave();
}

// ---------------------------------------------------------------------------
// Reads.

void ChecksummedVolume::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  if (!Admit([&done](int err) { done(err, {}); }, Access::kRead)) return;
  auto op = MakePooled<ReadOp>();
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

// On the workers, the digests only: the entries are compared here, on the loop, which alone
// touches the table.
void ChecksummedVolume::VerifyRead(const std::shared_ptr<ReadOp>& op) {
  if (OnWorkers(op->count)) {
    auto digests = std::make_shared<std::vector<Digest>>(op->count);
    return ForEachIndex(
        *options_.workers, io_.get_executor(), op->count,
        [crypto = worker_crypto_, op, digests](size_t worker, uint64_t i) {
          if (op->unwritten[i]) return;
          (*digests)[i] =
              crypto->ChecksumOf(worker, op->first + i, op->dest + i * crypto->block_size);
        },
        [this, alive = lifetime_.Watch(), op, digests] {
          if (alive.expired()) return;
          Verified(op, Mismatches(op, *digests));
        });
  }
  std::vector<size_t> bad;
  for (uint64_t i = 0; i < op->count; ++i)
    if (!op->unwritten[i] && !Verify(op->first + i, op->entries[i], op->dest + i * block_size_))
      bad.push_back(i);
  Verified(op, std::move(bad));
}

std::vector<size_t> ChecksummedVolume::Mismatches(const std::shared_ptr<ReadOp>& op,
                                                  const std::vector<Digest>& digests) const {
  std::vector<size_t> bad;
  for (uint64_t i = 0; i < op->count; ++i)
    if (!op->unwritten[i] && !digests[i].Matches(op->entries[i])) bad.push_back(i);
  return bad;
}

void ChecksummedVolume::Verified(const std::shared_ptr<ReadOp>& op, std::vector<size_t> bad) {
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
  // With copies, the second read asks each of them.
  if (redundant() && failed_before) return ReadFromCopies(block, ref, dest, keep, std::move(done));
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

// Encrypted volumes decrypt what verified (every written block, once err is 0); holes, never
// encrypted, are skipped.
void ChecksummedVolume::FinishRead(const std::shared_ptr<ReadOp>& op, int err) {
  if (err != 0 || !cipher_) return DeliverRead(op, err);
  if (!OnWorkers(op->count)) {
    Decrypt(op->first, op->dest, op->unwritten);
    return DeliverRead(op, 0);
  }
  ForEachIndex(
      *options_.workers, io_.get_executor(), op->count,
      [crypto = worker_crypto_, op](size_t worker, uint64_t i) {
        if (op->unwritten[i]) return;
        const std::span<uint8_t> block(op->dest + i * crypto->block_size, crypto->block_size);
        (void)crypto->workers[worker].cipher->Decrypt(op->first + i, block, block);
      },
      [this, alive = lifetime_.Watch(), op] {
        if (!alive.expired()) DeliverRead(op, 0);
      });
}

void ChecksummedVolume::DeliverRead(const std::shared_ptr<ReadOp>& op, int err) {
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
  if (!Admit(done, Access::kChange)) return;
  auto op = MakePooled<WriteOp>();
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
  auto join = MakeJoin([this, op, edges](int err) {
    if (err != 0) {
      End(op);
      return op->done(err);
    }
    if (cipher_)
      for (size_t i : edges)
        if (!EntryIsZero(op->refs[i]))
          DecryptBlock(op->first + i, op->staging.data() + i * block_size_);
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
  const uint8_t* plain = op->source;
  if (cipher_) {  // the members get ciphertext, never the client's bytes
    if (op->staging.empty()) op->staging.resize(op->count * block_size_);
    op->source = op->staging.data();
  }
  auto digests = std::make_shared<std::vector<Digest>>(op->count);
  if (OnWorkers(op->count)) {
    uint8_t* ciphertext = cipher_ ? op->staging.data() : nullptr;
    return ForEachIndex(
        *options_.workers, io_.get_executor(), op->count,
        [crypto = worker_crypto_, op, plain, ciphertext, digests](size_t worker, uint64_t i) {
          const uint32_t bs = crypto->block_size;
          const size_t at = i * bs;
          if (BlockCipher* cipher = crypto->workers[worker].cipher.get())
            (void)cipher->Encrypt(op->first + i, {plain + at, bs}, {ciphertext + at, bs});
          (*digests)[i] = crypto->ChecksumOf(worker, op->first + i, op->source + at);
        },
        [this, alive = lifetime_.Watch(), op, digests] {
          if (!alive.expired()) WriteChecksummed(op, digests);
        });
  }
  if (cipher_) Encrypt(op->first, op->count, plain, op->staging.data());
  for (uint64_t i = 0; i < op->count; ++i)
    (*digests)[i] = ChecksumOf(op->first + i, op->source + i * block_size_);
  WriteChecksummed(op, std::move(digests));
}

void ChecksummedVolume::WriteChecksummed(const std::shared_ptr<WriteOp>& op,
                                         std::shared_ptr<std::vector<Digest>> digests) {
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
                  if (err == 0 && op->fua && authenticated()) return FinishFuaWrite(op);
                  End(op);
                  op->done(err);
                });
}

// A FUA write of an authenticated volume is durable with its entries: its
// table pages are written and the members flushed before the answer.
void ChecksummedVolume::FinishFuaWrite(const std::shared_ptr<WriteOp>& op) {
  auto join = MakeJoin([this, op](int err) {
    if (err != 0) {
      End(op);
      return op->done(err);
    }
    FlushMembers([this, op](int flush_err) {
      End(op);
      op->done(flush_err);
    });
  });
  for (const PageKey& key : op->pages)
    table_.WriteNow(key, Part(join));
  join->Arrive(0);
}

// ---------------------------------------------------------------------------
// Trim, zero, flush, cache, block status.

void ChecksummedVolume::Flush(Done done) {
  if (!Admit(done, Access::kChange)) return;
  FlushWithEntries([this, done = std::move(done)](int err) {
    Leave();
    done(err);
  });
}

// An authenticated volume's recovery keeps entries and never recomputes
// them, so what a FLUSH promises includes the entries: the dirty table pages
// are written before the members flush. The others recompute dirty regions
// from their data and flush the data alone.
void ChecksummedVolume::FlushWithEntries(Done done) {
  if (!authenticated()) return FlushMembers(std::move(done));
  table_.WriteBack([this, alive = lifetime_.Watch(), done = std::move(done)](int err) mutable {
    if (alive.expired()) return done(ESHUTDOWN);
    if (err != 0) return done(err);
    FlushMembers(std::move(done));
  });
}

void ChecksummedVolume::Trim(uint64_t offset, uint64_t length, bool fua, Done done) {
  // Only whole blocks are forgotten; trimming part of a block is a no-op,
  // which TRIM's advisory nature allows.
  if (!Admit(done, Access::kChange)) return;
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
  if (!Admit(done, Access::kChange)) return;
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
    if (authenticated()) return ZeroEntriesFirst(op, may_trim, fua, std::move(done));
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

// An authenticated volume's recovery never recomputes entries, so a zeroed
// block whose old entry were still durable would read as EIO after a crash:
// the zero entries are made durable first (written, members flushed), then
// the blocks are zeroed. A crash in between leaves holes that read as zeros.
void ChecksummedVolume::ZeroEntriesFirst(const std::shared_ptr<Op>& op, bool may_trim, bool fua,
                                         Done done) {
  for (const BlockRef& ref : op->refs) {
    const std::span<uint8_t> entry = table_.Entry(ref.member, ref.block);
    std::fill(entry.begin(), entry.end(), 0);
  }
  auto written = MakeJoin([this, op, may_trim, fua, done = std::move(done)](int err) mutable {
    if (err != 0) {
      End(op);
      return done(err);
    }
    FlushMembers([this, op, may_trim, fua, done = std::move(done)](int flush_err) mutable {
      if (flush_err != 0) {
        End(op);
        return done(flush_err);
      }
      inner_->Zero(op->first * block_size_, op->count * block_size_, may_trim, false, fua,
                   [this, op, done = std::move(done)](int zero_err) {
                     End(op);
                     done(zero_err);
                   });
    });
  });
  for (const PageKey& key : op->pages) {
    table_.MarkDirty(key);
    table_.WriteNow(key, Part(written));
  }
  written->Arrive(0);
}

void ChecksummedVolume::Cache(uint64_t offset, uint64_t length, Done done) {
  if (!Admit(done, Access::kRead)) return;
  inner_->Cache(offset, length, [this, done = std::move(done)](int err) {
    Leave();
    done(err);
  });
}

void ChecksummedVolume::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  if (!Admit([&done](int err) { done(err, {}); }, Access::kRead)) return;
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

}  // namespace dst::integrity
