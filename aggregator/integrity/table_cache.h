// TableCache: the checksum table pages of a volume's members, cached in
// bounded memory and written back lazily (docs/format.md, "Checksum table").
//
// A request pins the pages holding its blocks' entries, reads and changes the
// entries while they are pinned, marks what it changed dirty, and unpins.
// Dirty pages reach the members when WriteBack() is called (the volume does so
// periodically and at shutdown) or when the cache is over its budget; the
// write-intent bitmap is what makes the delay safe, so this class never
// flushes. Writes of one page never overlap: a member may reorder concurrent
// writes, and an older copy landing last would undo a newer one.
//
// Contract: Pin() calls `ready` exactly once: before it returns when every
// page is cached, otherwise when the last one has loaded. The caller calls
// Unpin() with the same keys after `ready`, whatever the error. A page that
// failed to load reports its errno to every pinner and is dropped when the
// last one unpins, so a later Pin() reads it again. Memory: pages beyond
// the budget are evicted least recently used first, once unpinned and clean;
// pinned pages are never evicted, so the cache exceeds its budget by at most
// what the requests in flight have pinned.
//
// Table tags (keyed volumes created with them, docs/format.md §9): with AuthenticatePages(), a
// page is read together with its tag page and fails to load with EIO unless a slot's tag verifies
// (or both are all zero: never written); that failure is logged and counted once per page. A
// write-back tags the page with the next generation into the other slot, writes the tag page,
// flushes the member and only then writes the page, so either the old or the new pair is on the
// member whatever a crash interrupts, even one of the member's host that loses unflushed writes
// in any order. Those flushes are shared: a write-back waits for the next flush of its member
// that starts after its tag page was written (ordering_flushes counts them).
//
// With an anchor (table_anchor.h), a page whose verifying generation is below its anchor was put
// back on the member: it fails with EIO too, logged and counted once (rolled_back). The
// generations written back are handed to the anchor only once a member flush made them durable:
// TakeWrittenBack() before the flush, AnchorWrittenBack() after it.
//
// Threading: the event-loop thread only.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/table_anchor.h"
#include "aggregator/integrity/table_tags.h"
#include "aggregator/volume/member_io.h"
#include "common/callback.h"
#include "common/lifetime.h"

namespace dst::integrity {

// One page of one member's checksum table: page `index` of the table area.
struct PageKey {
  uint32_t member = 0;
  uint64_t index = 0;
  auto operator<=>(const PageKey&) const = default;
};

struct TableCacheCounters {
  uint64_t loads = 0;       // pages read from members
  uint64_t writebacks = 0;  // pages written to members
  uint64_t evictions = 0;
  uint64_t errors = 0;  // failed page reads and writes
  // Table tags: pages whose tags did not verify when loaded, each counted once.
  uint64_t unverified = 0;
  // Pages whose tags verified at a generation older than their anchor, each counted once.
  uint64_t rolled_back = 0;
  uint64_t anchor_errors = 0;     // failed writes of the anchor file
  uint64_t ordering_flushes = 0;  // member flushes between tag pages and their table pages
};

class TableCache {
 public:
  using Done = Callback<void(int err)>;

  // `members` and `geometries` are in member-index order and outlive the cache.
  TableCache(std::vector<volume::MemberTarget*> members, std::vector<MemberGeometry> geometries,
             uint64_t budget_bytes);
  ~TableCache();

  // Keyed volumes with table tags: pages are verified when loaded and tagged when written. Called
  // once, before the first Pin().
  void AuthenticatePages(TableTagger tagger) { tagger_.emplace(std::move(tagger)); }
  bool authenticates_pages() const { return tagger_.has_value(); }
  // With table tags: the anchor of every page's generation (owned from now on).
  void AnchorPages(std::unique_ptr<TableAnchor> anchor) { anchor_ = std::move(anchor); }
  const TableAnchor* anchor() const { return anchor_.get(); }
  // The generations written back (completed) since the last call, for AnchorWrittenBack() once
  // the member flush issued after this call has completed.
  using WrittenBack = std::map<PageKey, uint64_t>;
  WrittenBack TakeWrittenBack() { return std::exchange(written_back_, {}); }
  // `flush_err` 0: the generations are durable on the members, and anchored (the anchor file
  // synced; a failure there is logged and counted). Otherwise they wait for the next flush.
  void AnchorWrittenBack(WrittenBack written, int flush_err);

  // The page holding the entry of data block `block` of `member`.
  PageKey KeyOf(uint32_t member, uint64_t block) const;

  void Pin(const std::vector<PageKey>& keys, Done ready);
  void Unpin(const std::vector<PageKey>& keys);

  // The entry of a block whose page is pinned and loaded.
  std::span<uint8_t> Entry(uint32_t member, uint64_t block);
  // Records that entries of a pinned page changed.
  void MarkDirty(const PageKey& key);

  // Writes page `key` now if it is dirty (after a write of it already in
  // flight); `done` once the content it has now is on the member.
  void WriteNow(const PageKey& key, Done done) { WritePage(key, std::move(done)); }
  // Writes every page that is dirty when called; `done` when all of them are
  // written (not flushed), with the first error.
  void WriteBack(Done done);

  size_t cached_pages() const { return pages_.size(); }
  size_t dirty_pages() const;
  const TableCacheCounters& counters() const { return counters_; }

 private:
  struct Page;
  PageKey KeyAt(uint32_t member, const TableEntryLocation& where) const;
  Page& Lookup(const PageKey& key);
  void Load(const PageKey& key, Page& page);
  void Loaded(const PageKey& key, int err, const std::vector<uint8_t>* tag_bytes);
  // Table tags: 0 when a slot verifies the loaded page (its generation and slots kept), EIO
  // otherwise, logged and counted the first time.
  int VerifyLoaded(const PageKey& key, Page& page, const std::vector<uint8_t>& tag_bytes);
  // The member write of page `key`'s `bytes` (and, with table tags, of its tag page first).
  void SubmitWrite(const PageKey& key, Page& page,
                   std::shared_ptr<const std::vector<uint8_t>> bytes, Done done);
  // Writes the page if dirty, after any write already in flight; `done` once
  // the content it had when called is on the member.
  void WritePage(const PageKey& key, Done done);
  void Touch(Page& page);
  void MaybeEvict();
  uint64_t PageOffset(const PageKey& key) const;
  uint64_t TagPageOffsetOf(const PageKey& key) const;
  // `done` once a flush of `member` that started after this call has completed (at once for a
  // member that cannot flush).
  void FlushForOrder(uint32_t member, Done done);
  void StartOrderingFlush(uint32_t member);

  std::vector<volume::MemberTarget*> members_;
  std::vector<MemberGeometry> geometries_;
  uint64_t budget_pages_;
  std::map<PageKey, std::unique_ptr<Page>> pages_;
  std::list<PageKey> lru_;  // least recently used first
  TableCacheCounters counters_;
  std::optional<TableTagger> tagger_;
  std::unique_ptr<TableAnchor> anchor_;
  WrittenBack written_back_;
  std::set<PageKey> unverified_;  // pages already logged as failing their tags or anchors
  // By member: the ordering flush in flight, those waiting for it, and those that came after it
  // started (they wait for the next one).
  struct OrderingFlush {
    bool in_flight = false;
    std::vector<Done> current;
    std::vector<Done> next;
  };
  std::vector<OrderingFlush> ordering_;
  // Last, so it expires first: completions of I/O still in flight at
  // shutdown find no cache to update.
  Lifetime lifetime_;
};

}  // namespace dst::integrity
