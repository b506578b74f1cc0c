#include "aggregator/integrity/table_cache.h"

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
  bool writing = false;
  std::vector<std::function<void()>> on_loaded;
  std::vector<std::function<void()>> after_write;
  std::list<PageKey>::iterator lru;
};

TableCache::TableCache(std::vector<volume::MemberTarget*> members,
                       std::vector<MemberGeometry> geometries, uint64_t budget_bytes)
    : members_(std::move(members)),
      geometries_(std::move(geometries)),
      budget_pages_(std::max<uint64_t>(1, budget_bytes / kMetadataPageSize)) {}

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
  auto io = std::make_shared<volume::MemberIo>();
  io->op = volume::MemberOp::kRead;
  io->offset = PageOffset(key);
  io->length = kMetadataPageSize;
  io->data = page.bytes.data();  // the page is pinned until its load completes
  ++counters_.loads;
  io->done = [this, alive = lifetime_.Watch(), key](int err) {
    if (alive.expired()) return;
    Page& p = Lookup(key);
    p.state = err == 0 ? Page::State::kLoaded : Page::State::kFailed;
    p.error = err;
    if (err != 0) {
      ++counters_.errors;
      LOG_ERROR("checksum table: read of page %llu of member %s failed: %s",
                static_cast<unsigned long long>(key.index), members_[key.member]->name().c_str(),
                std::strerror(err));
    }
    auto waiters = std::move(p.on_loaded);
    for (auto& w : waiters)
      w();
  };
  members_[key.member]->Submit(std::move(io));
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
  auto io = std::make_shared<volume::MemberIo>();
  io->op = volume::MemberOp::kWrite;
  io->offset = PageOffset(key);
  io->length = kMetadataPageSize;
  auto snapshot = std::make_shared<std::vector<uint8_t>>(page.bytes);
  io->data = snapshot->data();
  ++counters_.writebacks;
  io->done = [this, alive = lifetime_.Watch(), key, snapshot, version = page.version,
              done = std::move(done)](int err) {
    if (alive.expired()) return;
    Page& p = Lookup(key);
    p.writing = false;
    --p.pins;
    if (err == 0 && p.version == version) p.dirty = false;
    if (err != 0) {
      ++counters_.errors;
      LOG_ERROR("checksum table: write of page %llu of member %s failed: %s",
                static_cast<unsigned long long>(key.index), members_[key.member]->name().c_str(),
                std::strerror(err));
    }
    auto waiters = std::move(p.after_write);
    for (auto& w : waiters)
      w();
    done(err);
    MaybeEvict();
  };
  members_[key.member]->Submit(std::move(io));
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
