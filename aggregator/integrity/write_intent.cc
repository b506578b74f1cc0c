#include "aggregator/integrity/write_intent.h"

#include <algorithm>
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
  }
}

void WriteIntent::Load(Done done) {
  auto join = MakeJoin([this, alive = lifetime_.Watch(), done = std::move(done)](int err) {
    if (alive.expired()) return;
    if (err == 0) {
      for (size_t m = 0; m < bitmaps_.size(); ++m) {
        // Bits past the last region mean nothing; a stray one (a bit flip on
        // disk) must not keep the volume from ever stopping clean.
        MemberBitmap& b = bitmaps_[m];
        const uint64_t regions = geometries_[m].regions();
        for (uint64_t bit = regions; bit < b.wanted.size() * 8; ++bit)
          b.wanted[bit / 8] &= static_cast<uint8_t>(~(1u << (bit % 8)));
        b.durable = b.wanted;
      }
    }
    done(err);
  });
  for (size_t m = 0; m < members_.size(); ++m) {
    const Area& area = geometries_[m].bitmap;
    const uint64_t piece = std::min<uint64_t>(kLoadPiece, members_[m]->capabilities().max_request);
    for (uint64_t at = 0; at < area.size; at += piece) {
      auto io = std::make_shared<volume::MemberIo>();
      io->op = volume::MemberOp::kRead;
      io->offset = area.offset + at;
      io->length = std::min(piece, area.size - at);
      io->data = bitmaps_[m].wanted.data() + at;
      io->done = Part(join);  // `this` is checked for life in the join's done
      members_[m]->Submit(std::move(io));
    }
  }
  join->Arrive(0);
}

bool WriteIntent::IsSet(uint32_t member, uint64_t region) const {
  return (bitmaps_[member].wanted[region / 8] >> (region % 8)) & 1;
}

bool WriteIntent::DurablySet(const RegionRef& r) const {
  const MemberBitmap& b = bitmaps_[r.member];
  const uint8_t mask = static_cast<uint8_t>(1u << (r.region % 8));
  return (b.wanted[r.region / 8] & mask) && (b.durable[r.region / 8] & mask);
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
  Waiter waiter;
  for (const RegionRef& r : regions) {
    if (DurablySet(r)) continue;
    MemberBitmap& b = bitmaps_[r.member];
    b.wanted[r.region / 8] |= static_cast<uint8_t>(1u << (r.region % 8));
    b.changed_pages.insert(r.region / 8 / kMetadataPageSize);
    waiter.regions.push_back(r);
    waiter.members.insert(r.member);
  }
  if (waiter.regions.empty()) return done(0);
  waiter.done = std::move(done);
  const std::set<uint32_t> members = waiter.members;
  waiters_.push_back(std::move(waiter));
  for (uint32_t m : members)
    StartSync(m);
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
    if (!bitmaps_[m].changed_pages.empty() || bitmaps_[m].syncing) waiter.members.insert(m);
  if (waiter.members.empty()) return done(0);
  waiter.done = std::move(done);
  const std::set<uint32_t> members = waiter.members;
  waiters_.push_back(std::move(waiter));
  for (uint32_t m : members)
    StartSync(m);
}

void WriteIntent::StartSync(uint32_t member) {
  MemberBitmap& b = bitmaps_[member];
  if (b.syncing || b.changed_pages.empty()) return;
  b.syncing = true;
  ++syncs_;
  const std::vector<uint64_t> pages(b.changed_pages.begin(), b.changed_pages.end());
  b.changed_pages.clear();
  auto written = std::make_shared<std::vector<std::vector<uint8_t>>>();
  for (uint64_t page : pages) {
    const auto first = b.wanted.begin() + static_cast<ptrdiff_t>(page * kMetadataPageSize);
    written->emplace_back(first, first + kMetadataPageSize);
  }
  volume::MemberTarget* target = members_[member];
  auto join = MakeJoin([this, alive = lifetime_.Watch(), member, pages, written, target](int err) {
    if (alive.expired()) return;
    if (err != 0 || !target->capabilities().can_flush)
      return FinishSync(member, pages, *written, err);
    auto flush = std::make_shared<volume::MemberIo>();
    flush->op = volume::MemberOp::kFlush;
    flush->done = [this, alive, member, pages, written](int flush_err) {
      if (!alive.expired()) FinishSync(member, pages, *written, flush_err);
    };
    target->Submit(std::move(flush));
  });
  for (size_t i = 0; i < pages.size(); ++i) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kWrite;
    io->offset = geometries_[member].bitmap.offset + pages[i] * kMetadataPageSize;
    io->length = kMetadataPageSize;
    io->data = (*written)[i].data();
    io->done = Part(join);  // the join's done holds `written` alive
    target->Submit(std::move(io));
  }
  join->Arrive(0);
}

void WriteIntent::FinishSync(uint32_t member, const std::vector<uint64_t>& pages,
                             const std::vector<std::vector<uint8_t>>& written, int err) {
  MemberBitmap& b = bitmaps_[member];
  b.syncing = false;
  if (err == 0) {
    for (size_t i = 0; i < pages.size(); ++i) {
      // What was written is durable, except bits cleared meanwhile: those
      // must not count as set until a later sync writes them again.
      uint8_t* durable = b.durable.data() + pages[i] * kMetadataPageSize;
      const uint8_t* wanted = b.wanted.data() + pages[i] * kMetadataPageSize;
      for (size_t j = 0; j < kMetadataPageSize; ++j)
        durable[j] = written[i][j] & wanted[j];
    }
  } else {
    LOG_ERROR("write-intent bitmap: update of member %s failed: %s",
              members_[member]->name().c_str(), std::strerror(err));
    for (uint64_t page : pages)
      b.changed_pages.insert(page);  // tried again by the next sync
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
    if (it->regions.empty()) {
      for (uint32_t m : it->members)
        satisfied = satisfied && !bitmaps_[m].syncing && bitmaps_[m].changed_pages.empty();
    } else {
      for (const RegionRef& r : it->regions)
        satisfied = satisfied && DurablySet(r);
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
