#include "aggregator/integrity/write_intent.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "common/join.h"
#include "common/log.h"

namespace dst::integrity {

namespace {

constexpr uint64_t kLoadPiece = uint64_t{1} << 20;

}  // namespace

WriteIntent::WriteIntent(std::vector<volume::MemberTarget*> members,
                         std::vector<MemberGeometry> geometries)
    : members_(std::move(members)), geometries_(std::move(geometries)) {
  bitmaps_.resize(members_.size());
  for (size_t m = 0; m < members_.size(); ++m) {
    bitmaps_[m].wanted.assign(geometries_[m].bitmap.size, 0);
    bitmaps_[m].durable.assign(geometries_[m].bitmap.size, 0);
    bitmaps_[m].missed.assign(geometries_[m].missed_writes.size, 0);
    bitmaps_[m].missed_durable.assign(geometries_[m].missed_writes.size, 0);
  }
}

void WriteIntent::Load(Done done) {
  Load([](uint32_t) { return std::vector<int32_t>{-1}; }, std::move(done));
}

void WriteIntent::Load(std::function<std::vector<int32_t>(uint32_t member)> copies, Done done) {
  // Per member, per copy read: the bitmap, then the missed-write map.
  struct Read {
    uint32_t member;
    std::vector<uint8_t> bitmap;
    std::vector<uint8_t> missed;
  };
  auto reads = std::make_shared<std::vector<Read>>();
  std::vector<int32_t> copy_of;
  for (uint32_t m = 0; m < members_.size(); ++m) {
    for (int32_t c : copies(m)) {
      reads->push_back({m, std::vector<uint8_t>(geometries_[m].bitmap.size),
                        std::vector<uint8_t>(geometries_[m].missed_writes.size)});
      copy_of.push_back(c);
    }
  }
  auto join = MakeJoin([this, alive = lifetime_.Watch(), reads, done = std::move(done)](int err) {
    if (alive.expired()) return;
    if (err == 0) Merge(*reads);
    done(err);
  });
  for (size_t i = 0; i < reads->size(); ++i) {
    Read& read = (*reads)[i];
    const uint32_t m = read.member;
    const uint64_t piece = std::min<uint64_t>(kLoadPiece, members_[m]->capabilities().max_request);
    // The missed-write map too: pages are written whole, so its bits must be known.
    const std::pair<const Area*, uint8_t*> areas[] = {
        {&geometries_[m].bitmap, read.bitmap.data()},
        {&geometries_[m].missed_writes, read.missed.data()}};
    for (const auto& [area, into] : areas) {
      for (uint64_t at = 0; at < area->size; at += piece) {
        auto io = std::make_shared<volume::MemberIo>();
        io->op = volume::MemberOp::kRead;
        io->offset = area->offset + at;
        io->length = std::min(piece, area->size - at);
        io->data = into + at;
        io->only_copy = copy_of[i];
        io->done = Part(join);  // the join's done holds `reads` alive
        members_[m]->Submit(std::move(io));
      }
    }
  }
  join->Arrive(0);
}

// Every bit set on any copy is set; a bit not on every copy is not durable.
template <typename Reads>
void WriteIntent::Merge(const Reads& reads) {
  for (uint32_t m = 0; m < bitmaps_.size(); ++m) {
    MemberBitmap& b = bitmaps_[m];
    std::fill(b.wanted.begin(), b.wanted.end(), 0);
    std::fill(b.missed.begin(), b.missed.end(), 0);
    std::fill(b.durable.begin(), b.durable.end(), 0xff);
    std::fill(b.missed_durable.begin(), b.missed_durable.end(), 0xff);
    for (const auto& read : reads) {
      if (read.member != m) continue;
      for (size_t j = 0; j < b.wanted.size(); ++j) {
        b.wanted[j] |= read.bitmap[j];
        b.durable[j] &= read.bitmap[j];
      }
      for (size_t j = 0; j < b.missed.size(); ++j) {
        b.missed[j] |= read.missed[j];
        b.missed_durable[j] &= read.missed[j];
      }
    }
    // Bits past the last region mean nothing; a stray one (a bit flip on
    // disk) must not keep the volume from ever stopping clean.
    const uint64_t regions = geometries_[m].regions();
    for (uint64_t bit = regions; bit < b.wanted.size() * 8; ++bit)
      b.wanted[bit / 8] &= static_cast<uint8_t>(~(1u << (bit % 8)));
    for (uint64_t bit = regions; bit < b.missed.size() * 8; ++bit)
      b.missed[bit / 8] &= static_cast<uint8_t>(~(1u << (bit % 8)));
    for (size_t j = 0; j < b.wanted.size(); ++j) {
      b.durable[j] &= b.wanted[j];
      if (b.durable[j] != b.wanted[j]) b.changed_pages.insert(j / kMetadataPageSize);
    }
    for (size_t j = 0; j < b.missed.size(); ++j) {
      b.missed_durable[j] &= b.missed[j];
      if (b.missed_durable[j] != b.missed[j]) b.missed_changed_pages.insert(j / kMetadataPageSize);
    }
  }
}

bool WriteIntent::IsSet(uint32_t member, uint64_t region) const {
  return (bitmaps_[member].wanted[region / 8] >> (region % 8)) & 1;
}

bool WriteIntent::DurablySet(const RegionRef& r) const {
  const MemberBitmap& b = bitmaps_[r.member];
  const uint8_t mask = static_cast<uint8_t>(1u << (r.region % 8));
  return (b.wanted[r.region / 8] & mask) && (b.durable[r.region / 8] & mask);
}

bool WriteIntent::MissedDurably(const RegionRef& r) const {
  const MemberBitmap& b = bitmaps_[r.member];
  const uint8_t mask = static_cast<uint8_t>(1u << (r.region % 8));
  return (b.missed[r.region / 8] & mask) && (b.missed_durable[r.region / 8] & mask);
}

bool WriteIntent::IsMissed(uint32_t member, uint64_t region) const {
  const MemberBitmap& b = bitmaps_[member];
  return region / 8 < b.missed.size() && ((b.missed[region / 8] >> (region % 8)) & 1);
}

std::vector<uint64_t> WriteIntent::MissedRegions(uint32_t member) const {
  std::vector<uint64_t> regions;
  const uint64_t count = geometries_[member].regions();
  for (uint64_t r = 0; r < count; ++r)
    if (IsMissed(member, r)) regions.push_back(r);
  return regions;
}

void WriteIntent::ClearMissed(uint32_t member) {
  MemberBitmap& b = bitmaps_[member];
  for (size_t j = 0; j < b.missed.size(); ++j) {
    if (b.missed[j] == 0 && b.missed_durable[j] == 0) continue;
    b.missed[j] = 0;
    b.missed_durable[j] = 0;
    b.missed_changed_pages.insert(j / kMetadataPageSize);
  }
}

size_t WriteIntent::missed_count() const {
  size_t n = 0;
  for (const MemberBitmap& b : bitmaps_)
    for (uint8_t byte : b.missed)
      n += static_cast<size_t>(std::popcount(byte));
  return n;
}

void WriteIntent::TrackMissedWrites(std::function<bool(uint32_t member)> degraded) {
  degraded_ = std::move(degraded);
}

std::vector<uint64_t> WriteIntent::SetRegions(uint32_t member) const {
  std::vector<uint64_t> regions;
  const uint64_t count = geometries_[member].regions();
  for (uint64_t r = 0; r < count; ++r)
    if (IsSet(member, r)) regions.push_back(r);
  return regions;
}

size_t WriteIntent::set_count() const {
  size_t n = 0;
  for (const MemberBitmap& b : bitmaps_)
    for (uint8_t byte : b.wanted)
      n += static_cast<size_t>(std::popcount(byte));
  return n;
}

void WriteIntent::Ensure(const std::vector<RegionRef>& regions, Done done) {
  EnsureBits(regions, true, false, std::move(done));
}

void WriteIntent::EnsureMissed(const std::vector<RegionRef>& regions, Done done) {
  EnsureBits(regions, false, true, std::move(done));
}

// Sets the intent bits (`intent`) and the missed-write bits (`only_missed`,
// or on a target missing a copy) of `regions`; one sync per member writes both.
void WriteIntent::EnsureBits(const std::vector<RegionRef>& regions, bool intent, bool only_missed,
                             Done done) {
  Waiter waiter;
  for (const RegionRef& r : regions) {
    MemberBitmap& b = bitmaps_[r.member];
    const uint8_t mask = static_cast<uint8_t>(1u << (r.region % 8));
    if (intent && !DurablySet(r)) {
      b.wanted[r.region / 8] |= mask;
      b.changed_pages.insert(r.region / 8 / kMetadataPageSize);
      waiter.regions.push_back(r);
      waiter.members.insert(r.member);
    }
    const bool missed = !b.missed.empty() && (only_missed || (degraded_ && degraded_(r.member)));
    if (missed && !MissedDurably(r)) {
      b.missed[r.region / 8] |= mask;
      b.missed_changed_pages.insert(r.region / 8 / kMetadataPageSize);
      waiter.missed.push_back(r);
      waiter.members.insert(r.member);
    }
  }
  if (waiter.regions.empty() && waiter.missed.empty()) return done(0);
  waiter.done = std::move(done);
  const std::set<uint32_t> members = waiter.members;
  waiters_.push_back(std::move(waiter));
  for (uint32_t m : members)
    StartSync(m);
}

std::vector<WriteIntent::MapPage> WriteIntent::MarkMissed(const std::vector<RegionRef>& regions) {
  for (const RegionRef& r : regions) {
    MemberBitmap& b = bitmaps_[r.member];
    if (b.missed.empty()) continue;
    const uint8_t mask = static_cast<uint8_t>(1u << (r.region % 8));
    if (b.missed[r.region / 8] & mask) continue;
    b.missed[r.region / 8] |= mask;
    b.missed_changed_pages.insert(r.region / 8 / kMetadataPageSize);
  }
  return MissedPages(regions);
}

std::vector<WriteIntent::MapPage> WriteIntent::MissedPages(
    const std::vector<RegionRef>& regions) const {
  std::vector<MapPage> pages;
  for (const RegionRef& r : regions) {
    const MemberBitmap& b = bitmaps_[r.member];
    if (b.missed.empty()) continue;
    const uint64_t page = r.region / 8 / kMetadataPageSize;
    const uint64_t offset = geometries_[r.member].missed_writes.offset + page * kMetadataPageSize;
    if (std::any_of(pages.begin(), pages.end(),
                    [&](const MapPage& p) { return p.member == r.member && p.offset == offset; }))
      continue;
    const auto first = b.missed.begin() + static_cast<ptrdiff_t>(page * kMetadataPageSize);
    pages.push_back({r.member, offset, std::vector<uint8_t>(first, first + kMetadataPageSize)});
  }
  return pages;
}

void WriteIntent::Clear(uint32_t member, uint64_t region) {
  MemberBitmap& b = bitmaps_[member];
  const uint8_t mask = static_cast<uint8_t>(1u << (region % 8));
  if (!(b.wanted[region / 8] & mask)) return;
  b.wanted[region / 8] &= static_cast<uint8_t>(~mask);
  b.durable[region / 8] &= static_cast<uint8_t>(~mask);
  b.changed_pages.insert(region / 8 / kMetadataPageSize);
}

void WriteIntent::Sync(Done done) {
  Waiter waiter;
  for (uint32_t m = 0; m < bitmaps_.size(); ++m)
    if (!bitmaps_[m].changed_pages.empty() || !bitmaps_[m].missed_changed_pages.empty() ||
        bitmaps_[m].syncing)
      waiter.members.insert(m);
  if (waiter.members.empty()) return done(0);
  waiter.done = std::move(done);
  const std::set<uint32_t> members = waiter.members;
  waiters_.push_back(std::move(waiter));
  for (uint32_t m : members)
    StartSync(m);
}

void WriteIntent::StartSync(uint32_t member) {
  MemberBitmap& b = bitmaps_[member];
  if (b.syncing || (b.changed_pages.empty() && b.missed_changed_pages.empty())) return;
  b.syncing = true;
  ++syncs_;
  auto pages = std::make_shared<std::vector<SyncPage>>();
  const auto take = [&pages](bool missed, std::set<uint64_t>& changed,
                             const std::vector<uint8_t>& bits) {
    for (uint64_t page : changed) {
      const auto first = bits.begin() + static_cast<ptrdiff_t>(page * kMetadataPageSize);
      pages->push_back({missed, page, std::vector<uint8_t>(first, first + kMetadataPageSize)});
    }
    changed.clear();
  };
  take(false, b.changed_pages, b.wanted);
  take(true, b.missed_changed_pages, b.missed);
  volume::MemberTarget* target = members_[member];
  auto join = MakeJoin([this, alive = lifetime_.Watch(), member, pages, target](int err) {
    if (alive.expired()) return;
    if (err != 0 || !target->capabilities().can_flush) return FinishSync(member, *pages, err);
    auto flush = std::make_shared<volume::MemberIo>();
    flush->op = volume::MemberOp::kFlush;
    flush->done = [this, alive, member, pages](int flush_err) {
      if (!alive.expired()) FinishSync(member, *pages, flush_err);
    };
    target->Submit(std::move(flush));
  });
  for (SyncPage& page : *pages) {
    const Area& area = page.missed ? geometries_[member].missed_writes : geometries_[member].bitmap;
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kWrite;
    io->offset = area.offset + page.index * kMetadataPageSize;
    io->length = kMetadataPageSize;
    io->data = page.bytes.data();
    io->done = Part(join);  // the join's done holds `pages` alive
    target->Submit(std::move(io));
  }
  join->Arrive(0);
}

void WriteIntent::FinishSync(uint32_t member, const std::vector<SyncPage>& pages, int err) {
  MemberBitmap& b = bitmaps_[member];
  b.syncing = false;
  if (err == 0) {
    for (const SyncPage& page : pages) {
      // What was written is durable, except bits cleared meanwhile: those
      // must not count as set until a later sync writes them again.
      const size_t at = page.index * kMetadataPageSize;
      uint8_t* durable = (page.missed ? b.missed_durable : b.durable).data() + at;
      const uint8_t* wanted = (page.missed ? b.missed : b.wanted).data() + at;
      for (size_t j = 0; j < kMetadataPageSize; ++j)
        durable[j] = page.bytes[j] & wanted[j];
    }
  } else {
    LOG_ERROR("write-intent bitmap: update of member %s failed: %s",
              members_[member]->name().c_str(), std::strerror(err));
    for (const SyncPage& page : pages)  // tried again by the next sync
      (page.missed ? b.missed_changed_pages : b.changed_pages).insert(page.index);
    // Everyone waiting on this member learns of the failure; the callbacks
    // run after the list is settled, since they may Ensure() again.
    std::vector<Done> failed;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (!it->members.count(member)) {
        ++it;
        continue;
      }
      failed.push_back(std::move(it->done));
      it = waiters_.erase(it);
    }
    for (Done& done : failed)
      done(err);
  }
  WakeWaiters();
  // Changes made while this sync ran go out now, if anyone waits for them.
  bool wanted = false;
  for (const Waiter& w : waiters_)
    wanted = wanted || w.members.count(member);
  if (wanted) StartSync(member);
}

void WriteIntent::WakeWaiters() {
  std::vector<Done> ready;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    bool satisfied = true;
    if (it->regions.empty() && it->missed.empty()) {
      for (uint32_t m : it->members)
        satisfied = satisfied && !bitmaps_[m].syncing && bitmaps_[m].changed_pages.empty() &&
                    bitmaps_[m].missed_changed_pages.empty();
    } else {
      for (const RegionRef& r : it->regions)
        satisfied = satisfied && DurablySet(r);
      for (const RegionRef& r : it->missed)
        satisfied = satisfied && MissedDurably(r);
    }
    if (!satisfied) {
      ++it;
      continue;
    }
    ready.push_back(std::move(it->done));
    it = waiters_.erase(it);
  }
  for (Done& d : ready)
    d(0);
}

}  // namespace dst::integrity
