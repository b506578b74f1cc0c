#include "aggregator/integrity/table_cache.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/join.h"
#include "common/log.h"

namespace dst::integrity {

struct TableCache::Page {
  enum class State { kLoading, kLoaded, kFailed };

  std::vector<uint8_t> bytes = std::vector<uint8_t>(kMetadataPageSize);
  State state = State::kLoading;
  int error = 0;
  uint32_t pins = 0;
  bool dirty = false;
  uint64_t version = 0;  // bumped on every MarkDirty
  // Table tags: the slots as on the member, and the generation the page's content has there.
  TagPage tags;
  uint64_t generation = 0;
  bool writing = false;
  std::vector<std::function<void()>> on_loaded;
  std::vector<std::function<void()>> after_write;
  std::list<PageKey>::iterator lru;
};

TableCache::TableCache(std::vector<volume::MemberTarget*> members,
                       std::vector<MemberGeometry> geometries, uint64_t budget_bytes)
    : members_(std::move(members)),
      geometries_(std::move(geometries)),
      budget_pages_(std::max<uint64_t>(1, budget_bytes / kMetadataPageSize)),
      ordering_(members_.size()) {}

TableCache::~TableCache() = default;

PageKey TableCache::KeyOf(uint32_t member, uint64_t block) const {
  return KeyAt(member, LocateTableEntry(geometries_[member], block));
}

PageKey TableCache::KeyAt(uint32_t member, const TableEntryLocation& where) const {
  return {member, (where.page_offset - geometries_[member].table.offset) / kMetadataPageSize};
}

uint64_t TableCache::PageOffset(const PageKey& key) const {
  return geometries_[key.member].table.offset + key.index * kMetadataPageSize;
}

uint64_t TableCache::TagPageOffsetOf(const PageKey& key) const {
  return TagPageOffset(geometries_[key.member], key.index);
}

TableCache::Page& TableCache::Lookup(const PageKey& key) {
  return *pages_.at(key);
}

void TableCache::Touch(Page& page) {
  lru_.splice(lru_.end(), lru_, page.lru);
}

void TableCache::Pin(const std::vector<PageKey>& keys, Done ready) {
  // Counts the pages still loading; the last one to arrive calls `ready`.
  auto join = MakeJoin(std::move(ready));
  for (const PageKey& key : keys) {
    auto [it, inserted] = pages_.try_emplace(key);
    if (inserted) {
      it->second = std::make_unique<Page>();
      it->second->lru = lru_.insert(lru_.end(), key);
    }
    Page& page = *it->second;
    ++page.pins;
    Touch(page);
    if (inserted) Load(key, page);
    if (page.state == Page::State::kLoading) {
      page.on_loaded.push_back([part = Part(join), &page] { part(page.error); });
    } else if (page.state == Page::State::kFailed) {
      Part(join)(page.error);
    }
  }
  join->Arrive(0);
}

void TableCache::Load(const PageKey& key, Page& page) {
  ++counters_.loads;
  auto tag_bytes = tagger_ ? std::make_shared<std::vector<uint8_t>>(kMetadataPageSize) : nullptr;
  auto join = MakeJoin([this, alive = lifetime_.Watch(), key, tag_bytes](int err) {
    if (!alive.expired()) Loaded(key, err, tag_bytes.get());
  });
  auto read = [this, &key](uint64_t offset, uint8_t* into, Done done) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = offset;
    io->length = kMetadataPageSize;
    io->data = into;
    io->done = std::move(done);
    members_[key.member]->Submit(std::move(io));
  };
  // The page is pinned until its load completes; the tag page's buffer is held by the join's end.
  read(PageOffset(key), page.bytes.data(), Part(join));
  if (tag_bytes) read(TagPageOffsetOf(key), tag_bytes->data(), Part(join));
  join->Arrive(0);
}

void TableCache::Loaded(const PageKey& key, int err, const std::vector<uint8_t>* tag_bytes) {
  Page& p = Lookup(key);
  if (err != 0) {
    ++counters_.errors;
    LOG_ERROR("checksum table: read of page %llu of member %s failed: %s",
              static_cast<unsigned long long>(key.index), members_[key.member]->name().c_str(),
              std::strerror(err));
  } else if (tag_bytes != nullptr) {
    err = VerifyLoaded(key, p, *tag_bytes);
  }
  p.state = err == 0 ? Page::State::kLoaded : Page::State::kFailed;
  p.error = err;
  auto waiters = std::move(p.on_loaded);
  for (auto& w : waiters)
    w();
}

int TableCache::VerifyLoaded(const PageKey& key, Page& page,
                             const std::vector<uint8_t>& tag_bytes) {
  const TagPage tags = DecodeTagPage(std::span<const uint8_t, kMetadataPageSize>(tag_bytes));
  const std::optional<uint64_t> generation = tagger_->Verify(
      key.member, key.index, std::span<const uint8_t, kMetadataPageSize>(page.bytes), tags);
  const uint64_t anchored = anchor_ ? anchor_->Get(key.member, key.index) : 0;
  if (generation && *generation >= anchored) {
    page.tags = tags;
    page.generation = *generation;
    return 0;
  }
  if (!unverified_.insert(key).second) return EIO;  // logged and counted already
  const MemberGeometry& g = geometries_[key.member];
  const uint64_t per_page = kMetadataPageSize / g.entry_size();
  const uint64_t first = key.index * per_page;
  const auto last =
      static_cast<unsigned long long>(std::min(first + per_page, g.data_blocks()) - 1);
  const auto index = static_cast<unsigned long long>(key.index);
  const char* member = members_[key.member]->name().c_str();
  if (!generation) {
    ++counters_.unverified;
    LOG_ERROR(
        "checksum table: page %llu of member %s does not verify against its tag (its entries were "
        "changed, zeroed or put back on the member): blocks %llu to %llu of its data area read "
        "as EIO",
        index, member, static_cast<unsigned long long>(first), last);
  } else {
    ++counters_.rolled_back;
    LOG_ERROR(
        "checksum table: page %llu of member %s is generation %llu, older than generation %llu "
        "anchored by this aggregator (put back on the member): blocks %llu to %llu of its data "
        "area read as EIO",
        index, member, static_cast<unsigned long long>(*generation),
        static_cast<unsigned long long>(anchored), static_cast<unsigned long long>(first), last);
  }
  return EIO;
}

void TableCache::AnchorWrittenBack(WrittenBack written, int flush_err) {
  if (!anchor_ || written.empty()) return;
  if (flush_err != 0) {
    // Not durable: they wait for the next flush, with what was written back since.
    for (const auto& [key, generation] : written) {
      uint64_t& g = written_back_[key];
      g = std::max(g, generation);
    }
    return;
  }
  for (const auto& [key, generation] : written)
    anchor_->Raise(key.member, key.index, generation);
  const Status s = anchor_->Sync();
  if (!s.ok()) {
    ++counters_.anchor_errors;
    LOG_ERROR("checksum table: recording table generations: %s", s.message().c_str());
  }
}

void TableCache::Unpin(const std::vector<PageKey>& keys) {
  for (const PageKey& key : keys) {
    auto it = pages_.find(key);
    if (it == pages_.end()) continue;
    Page& page = *it->second;
    if (--page.pins == 0 && page.state == Page::State::kFailed) {
      lru_.erase(page.lru);
      pages_.erase(it);
    }
  }
  MaybeEvict();
}

std::span<uint8_t> TableCache::Entry(uint32_t member, uint64_t block) {
  const TableEntryLocation where = LocateTableEntry(geometries_[member], block);
  Page& page = Lookup(KeyAt(member, where));
  return {page.bytes.data() + where.offset_in_page, where.size};
}

void TableCache::MarkDirty(const PageKey& key) {
  Page& page = Lookup(key);
  page.dirty = true;
  ++page.version;
}

size_t TableCache::dirty_pages() const {
  size_t n = 0;
  for (const auto& [key, page] : pages_)
    n += page->dirty;
  return n;
}

void TableCache::WritePage(const PageKey& key, Done done) {
  auto it = pages_.find(key);
  if (it == pages_.end()) return done(0);  // evicted: it was clean
  Page& page = *it->second;
  if (page.writing) {
    page.after_write.push_back(
        [this, key, done = std::move(done)]() mutable { WritePage(key, std::move(done)); });
    return;
  }
  if (!page.dirty) return done(0);
  page.writing = true;
  ++page.pins;  // kept until the write completes
  auto snapshot = std::make_shared<const std::vector<uint8_t>>(page.bytes);
  ++counters_.writebacks;
  SubmitWrite(key, page, std::move(snapshot),
              [this, alive = lifetime_.Watch(), key, version = page.version,
               done = std::move(done)](int err) {
                if (alive.expired()) return;
                Page& p = Lookup(key);
                p.writing = false;
                --p.pins;
                if (err == 0 && p.version == version) p.dirty = false;
                if (err != 0) {
                  ++counters_.errors;
                  LOG_ERROR("checksum table: write of page %llu of member %s failed: %s",
                            static_cast<unsigned long long>(key.index),
                            members_[key.member]->name().c_str(), std::strerror(err));
                }
                auto waiters = std::move(p.after_write);
                for (auto& w : waiters)
                  w();
                done(err);
                MaybeEvict();
              });
}

void TableCache::SubmitWrite(const PageKey& key, Page& page,
                             std::shared_ptr<const std::vector<uint8_t>> bytes, Done done) {
  auto write = [this, key](uint64_t offset, std::shared_ptr<const std::vector<uint8_t>> data,
                           Done written) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kWrite;
    io->offset = offset;
    io->length = kMetadataPageSize;
    io->data = const_cast<uint8_t*>(data->data());  // a write only reads it
    io->done = [data, written = std::move(written)](int err) { written(err); };
    members_[key.member]->Submit(std::move(io));
  };
  if (!tagger_) return write(PageOffset(key), std::move(bytes), std::move(done));
  // The next generation goes into the slot that does not hold the current one, and the tag page
  // is durable on the member before the page is written: whatever is interrupted, one slot
  // verifies what the member holds. The generation advances only once both writes succeeded, so
  // a failed attempt is retried into the same slot and the current one stays intact.
  const uint64_t generation = page.generation + 1;
  TagPage tags = page.tags;
  tags.slots[generation % kTagSlots] = {
      generation, tagger_->Tag(key.member, key.index, generation,
                               std::span<const uint8_t, kMetadataPageSize>(*bytes))};
  auto tag_bytes = std::make_shared<std::vector<uint8_t>>(kMetadataPageSize);
  EncodeTagPage(tags, std::span<uint8_t, kMetadataPageSize>(*tag_bytes));
  write(TagPageOffsetOf(key), std::move(tag_bytes),
        [this, alive = lifetime_.Watch(), key, bytes = std::move(bytes), tags, generation, write,
         done = std::move(done)](int err) mutable {
          if (alive.expired()) return;
          if (err != 0) return done(err);
          FlushForOrder(key.member, [this, alive, key, bytes = std::move(bytes), tags, generation,
                                     write, done = std::move(done)](int flush_err) mutable {
            if (alive.expired()) return;
            if (flush_err != 0) return done(flush_err);
            write(PageOffset(key), std::move(bytes),
                  [this, alive, key, tags, generation, done = std::move(done)](int page_err) {
                    if (alive.expired()) return;
                    if (page_err == 0) {
                      Page& p = Lookup(key);
                      p.tags = tags;
                      p.generation = generation;
                      if (anchor_) written_back_[key] = generation;
                    }
                    done(page_err);
                  });
          });
        });
}

void TableCache::FlushForOrder(uint32_t member, Done done) {
  if (!members_[member]->capabilities().can_flush) return done(0);
  OrderingFlush& f = ordering_[member];
  if (f.in_flight) return f.next.push_back(std::move(done));
  f.current.push_back(std::move(done));
  StartOrderingFlush(member);
}

void TableCache::StartOrderingFlush(uint32_t member) {
  ordering_[member].in_flight = true;
  ++counters_.ordering_flushes;
  auto io = std::make_shared<volume::MemberIo>();
  io->op = volume::MemberOp::kFlush;
  io->done = [this, alive = lifetime_.Watch(), member](int err) {
    if (alive.expired()) return;
    OrderingFlush& f = ordering_[member];
    std::vector<Done> finished = std::exchange(f.current, std::exchange(f.next, {}));
    f.in_flight = false;
    if (!f.current.empty()) StartOrderingFlush(member);
    for (Done& d : finished)
      d(err);
  };
  members_[member]->Submit(std::move(io));
}

void TableCache::WriteBack(Done done) {
  std::vector<PageKey> keys;
  for (const auto& [key, page] : pages_)
    if (page->dirty || page->writing) keys.push_back(key);
  auto join = MakeJoin(std::move(done));
  for (const PageKey& key : keys)
    WritePage(key, Part(join));
  join->Arrive(0);
}

void TableCache::MaybeEvict() {
  if (pages_.size() <= budget_pages_) return;
  size_t writes_started = 0;
  for (auto it = lru_.begin(); it != lru_.end() && pages_.size() > budget_pages_;) {
    const PageKey key = *it;
    Page& page = Lookup(key);
    ++it;
    if (page.pins > 0 || page.writing || page.state == Page::State::kLoading) continue;
    if (page.dirty) {
      // Written now, evicted when the write completes; a few at a time.
      if (writes_started++ < 16) WritePage(key, [](int) {});
      continue;
    }
    lru_.erase(page.lru);
    pages_.erase(key);
    ++counters_.evictions;
  }
}

}  // namespace dst::integrity
