// Self-heal of ChecksummedVolume (mirror and raid10): a block that failed
// verification is read from every current copy of its set; a copy that
// verifies is served and the others are rewritten with it under the block's
// lock. When no copy's data verifies against the cached entry, each copy's
// own table page is asked (the entry may be the bad part). See
// docs/redundancy.md, "Self-heal".
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/checksummed_volume.h"
#include "common/join.h"
#include "common/log.h"

namespace dst::integrity {

// One copy's answer to a block read, and to a read of its table page.
struct ChecksummedVolume::CopyRead {
  uint32_t copy = 0;
  int err = 0;
  bool verified = false;
  std::vector<uint8_t> data;
  int page_err = 0;
  std::vector<uint8_t> page;
};

// Every current copy is read, not just another one: the first read does not
// say which copy served it, and each copy that holds a bad block is repaired.
void ChecksummedVolume::ReadFromCopies(uint64_t block, const BlockRef& ref, uint8_t* dest,
                                       std::shared_ptr<Op> keep, Done done) {
  const volume::MirrorSet& set = *sets_[ref.member];
  auto reads = std::make_shared<std::vector<CopyRead>>();
  for (uint32_t c = 0; c < set.copy_count(); ++c)
    if (set.role(c) == volume::CopyRole::kCurrent)
      reads->push_back({c, 0, false, std::vector<uint8_t>(block_size_), 0, {}});
  auto join = MakeJoin([this, alive = lifetime_.Watch(), block, ref, dest, reads, keep,
                        done = std::move(done)](int) {
    if (alive.expired()) return;
    const uint32_t k = copies_per_set();
    const CopyRead* good = nullptr;
    for (CopyRead& r : *reads) {
      r.verified = r.err == 0 && Verify(block, ref, r.data.data());
      if (r.verified && good == nullptr) good = &r;
    }
    if (good == nullptr) return RepairEntry(block, ref, dest, reads, keep, done);
    std::memcpy(dest, good->data.data(), block_size_);
    const uint32_t good_slot = ref.member * k + good->copy;
    bool repairing = false;
    for (const CopyRead& r : *reads) {
      if (r.err != 0 || r.verified) continue;
      const uint32_t slot = ref.member * k + r.copy;
      ++read_failovers_[slot];
      repairing = true;
      LOG_WARNING(
          "volume %s: checksum mismatch at %s on member %u %s: served from member %u %s; "
          "repairing",
          name().c_str(), BlockPlace(block, ref).c_str(), slot, copies_[slot]->name().c_str(),
          good_slot, copies_[good_slot]->name().c_str());
      Repair(block, ref, r.copy, std::make_shared<std::vector<uint8_t>>(good->data));
    }
    if (!repairing) {
      ++counters_.rereads_recovered;
      LOG_WARNING("volume %s: checksum mismatch at %s cleared on re-read", name().c_str(),
                  BlockPlace(block, ref).c_str());
    }
    done(0);
  });
  for (size_t i = 0; i < reads->size(); ++i) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = ref.block * block_size_;
    io->length = block_size_;
    io->data = (*reads)[i].data.data();
    io->only_copy = static_cast<int32_t>((*reads)[i].copy);
    io->done = [reads, i, part = Part(join)](int err) {
      (*reads)[i].err = err;
      part(0);
    };
    data_areas_[ref.member]->Submit(std::move(io));
  }
  join->Arrive(0);
}

void ChecksummedVolume::FailEveryCopy(uint64_t block, const BlockRef& ref,
                                      const std::vector<CopyRead>& reads, const Done& done) {
  const uint32_t k = copies_per_set();
  std::string tried;
  for (const CopyRead& r : reads) {
    const uint32_t slot = ref.member * k + r.copy;
    if (r.err == 0) ++member_checksum_errors_[slot];
    tried += (tried.empty() ? "" : ", ") + std::string("member ") + std::to_string(slot) + " " +
             copies_[slot]->name() + ": " +
             (r.err == 0 ? std::string("mismatch") : std::string(std::strerror(r.err)));
  }
  ++counters_.checksum_errors;
  LOG_ERROR("volume %s: checksum mismatch at %s on every copy (%s): returning EIO", name().c_str(),
            BlockPlace(block, ref).c_str(), tried.c_str());
  done(EIO);
}

void ChecksummedVolume::RepairEntry(uint64_t block, const BlockRef& ref, uint8_t* dest,
                                    std::shared_ptr<std::vector<CopyRead>> reads,
                                    std::shared_ptr<Op> keep, Done done) {
  const TableEntryLocation where = LocateTableEntry(geometries_[ref.member], ref.block);
  auto join = MakeJoin([this, alive = lifetime_.Watch(), block, ref, dest, reads, keep, where,
                        done = std::move(done)](int) {
    if (alive.expired()) return;
    const auto own_entry = [&where](const CopyRead& r) {
      return std::span<const uint8_t>(r.page.data() + where.offset_in_page, where.size);
    };
    const CopyRead* good = nullptr;
    for (const CopyRead& r : *reads)
      if (good == nullptr && r.err == 0 && r.page_err == 0 && !IsZeroEntry(own_entry(r)) &&
          Verify(block, own_entry(r), r.data.data()))
        good = &r;
    if (good == nullptr) return FailEveryCopy(block, ref, *reads, done);
    const uint32_t k = copies_per_set();
    const uint32_t good_slot = ref.member * k + good->copy;
    const std::span<uint8_t> entry = table_.Entry(ref.member, ref.block);
    std::memcpy(entry.data(), own_entry(*good).data(), entry.size());
    const PageKey key = table_.KeyOf(ref.member, ref.block);
    table_.MarkDirty(key);
    std::memcpy(dest, good->data.data(), block_size_);
    LOG_WARNING(
        "volume %s: checksum mismatch at %s on every copy against the cached table entry; member "
        "%u %s's own entry and data verify: serving them, repairing the other copies",
        name().c_str(), BlockPlace(block, ref).c_str(), good_slot,
        copies_[good_slot]->name().c_str());
    // Copies whose data is good but whose entry was not are repaired by the
    // page write; the others by rewriting the block (which counts them).
    std::vector<uint32_t> entry_only;
    for (const CopyRead& r : *reads) {
      if (&r == good) continue;
      const uint32_t slot = ref.member * k + r.copy;
      const bool data_good = r.err == 0 && Verify(block, entry, r.data.data());
      const bool entry_good =
          r.page_err == 0 && std::equal(entry.begin(), entry.end(), own_entry(r).begin());
      if (!data_good) {
        ++read_failovers_[slot];
        Repair(block, ref, r.copy, std::make_shared<std::vector<uint8_t>>(good->data));
      } else if (!entry_good) {
        entry_only.push_back(slot);
      }
    }
    ++in_flight_;  // Close() waits for the page write
    table_.WriteNow(key, [this, alive, block, ref, entry_only](int err) {
      if (alive.expired()) return;
      if (err == 0) {
        for (uint32_t slot : entry_only) {
          ++repaired_blocks_[slot];
          LOG_INFO("volume %s: repaired the checksum table entry of %s on member %u %s",
                   name().c_str(), BlockPlace(block, ref).c_str(), slot,
                   copies_[slot]->name().c_str());
        }
      }
      LeaveInternal();
    });
    done(0);
  });
  for (CopyRead& r : *reads) {
    r.page.resize(kMetadataPageSize);
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = where.page_offset;
    io->length = kMetadataPageSize;
    io->data = r.page.data();
    io->only_copy = static_cast<int32_t>(r.copy);
    io->done = [&r, part = Part(join)](int err) {  // `reads` outlives the join
      r.page_err = err;
      part(0);
    };
    members_[ref.member]->Submit(std::move(io));
  }
  join->Arrive(0);
}

// Runs after the read that found the bad copy has ended: the rewrite needs
// the block exclusively, and a write that came first has repaired it already
// (the entry no longer matches `good`).
void ChecksummedVolume::Repair(uint64_t block, BlockRef ref, uint32_t copy,
                               std::shared_ptr<std::vector<uint8_t>> good,
                               std::function<void(bool repaired)> repaired) {
  ++in_flight_;  // Close() waits for it
  lock_.Acquire(block, 1, true,
                [this, alive = lifetime_.Watch(), block, ref, copy, good,
                 repaired = std::move(repaired)](RangeLock::Id id) {
                  if (alive.expired()) return;
                  const std::vector<PageKey> pages{table_.KeyOf(ref.member, ref.block)};
                  table_.Pin(pages, [this, block, ref, copy, good, id, pages, repaired](int err) {
                    auto release = [this, id, pages, repaired](bool ok) {
                      table_.Unpin(pages);
                      lock_.Release(id);
                      LeaveInternal();
                      if (repaired) repaired(ok);
                    };
                    if (err != 0 || !Verify(block, ref, good->data())) return release(false);
                    RepairLocked(block, ref, copy, good, std::move(release));
                  });
                });
}

void ChecksummedVolume::RepairLocked(uint64_t block, BlockRef ref, uint32_t copy,
                                     std::shared_ptr<std::vector<uint8_t>> good,
                                     std::function<void(bool repaired)> release) {
  const uint32_t slot = ref.member * copies_per_set() + copy;
  auto fail = [this, block, ref, slot, release](const std::string& why) {
    LOG_ERROR("volume %s: repairing %s on member %u %s: %s", name().c_str(),
              BlockPlace(block, ref).c_str(), slot, copies_[slot]->name().c_str(), why.c_str());
    const uint32_t k = copies_per_set();
    if (sets_[ref.member]->role(slot % k) == volume::CopyRole::kCurrent && !LastCurrent(slot))
      DemoteSlot(slot, "repair of a bad block failed: " + why, [](int) {});
    release(false);
  };
  auto write = std::make_shared<volume::MemberIo>();
  write->op = volume::MemberOp::kWrite;
  write->offset = ref.block * block_size_;
  write->length = block_size_;
  write->data = good->data();
  write->fua = members_[ref.member]->capabilities().can_fua;
  write->only_copy = static_cast<int32_t>(copy);
  write->done = [this, alive = lifetime_.Watch(), block, ref, copy, slot, good, fail,
                 release](int err) {
    if (alive.expired()) return;
    if (err != 0) return fail(std::string("write: ") + std::strerror(err));
    auto check = std::make_shared<std::vector<uint8_t>>(block_size_);
    auto read = std::make_shared<volume::MemberIo>();
    read->op = volume::MemberOp::kRead;
    read->offset = ref.block * block_size_;
    read->length = block_size_;
    read->data = check->data();
    read->only_copy = static_cast<int32_t>(copy);
    read->done = [this, alive, block, ref, slot, check, fail, release](int read_err) {
      if (alive.expired()) return;
      if (read_err != 0) return fail(std::string("re-read: ") + std::strerror(read_err));
      if (!Verify(block, ref, check->data())) return fail("the re-read block does not verify");
      ++repaired_blocks_[slot];
      LOG_INFO("volume %s: repaired %s on member %u %s", name().c_str(),
               BlockPlace(block, ref).c_str(), slot, copies_[slot]->name().c_str());
      release(true);
    };
    data_areas_[ref.member]->Submit(std::move(read));
  };
  data_areas_[ref.member]->Submit(std::move(write));
}

}  // namespace dst::integrity
