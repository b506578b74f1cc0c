// TableAnchor: the newest durable generation of every checksum table page of a volume with table
// tags (docs/format.md §9, docs/encryption.md "Rollback"), kept where the export hosts cannot put
// it back: in the aggregator's memory and, with `serve --state-dir DIR`, in the file
// DIR/<volume UUID>.table-generations on the aggregator's host.
//
// A page whose verifying tag has a generation below its anchor was put back on the member (with
// its tag page, or as a whole member): the table cache fails it with EIO. A generation above the
// anchor is accepted: the write-back reached the member but the aggregator stopped before the
// flush that would have anchored it (a crash, or an unclean stop), and a tag cannot be forged.
// Anchors only rise, and only for generations that a member flush made durable (Raise() after
// the flush), so a member that loses unflushed writes never looks rolled back.
//
// File format (one per volume; big-endian): a 4096-byte header, magic "DSTTGEN1", u32 version 1,
// u32 table count, the volume UUID, then a u64 page count per table (at most 64); then one u64
// generation per page, table after table. Written in place: Sync() writes the entries raised
// since the last Sync() and fdatasync()s the file.
//
// Threading: the event-loop thread only. Sync() does blocking file I/O (a few small writes and
// one fdatasync).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "aggregator/integrity/superblock.h"
#include "common/status.h"

namespace dst::integrity {

class TableAnchor {
 public:
  // `pages[t]` is the number of table pages of table t (member, or set of copies). In memory
  // only: everything starts at 0 and is forgotten at exit.
  TableAnchor(std::vector<uint64_t> pages);
  ~TableAnchor();
  TableAnchor(const TableAnchor&) = delete;
  TableAnchor& operator=(const TableAnchor&) = delete;

  // Backs the anchors with the volume's file in `dir`: read when it exists (EINVAL when it is
  // another volume's or has another shape), created (all zero, made durable) when it does not.
  // Errors name the path and the errno.
  Status OpenFile(const std::string& dir, const Uuid& volume_uuid);
  const std::string& path() const { return path_; }

  uint64_t Get(uint32_t table, uint64_t page) const { return generations_[Index(table, page)]; }
  // The page's anchor becomes `generation` if that is higher.
  void Raise(uint32_t table, uint64_t page, uint64_t generation);
  // Writes the raised anchors to the file (if any) and makes them durable.
  Status Sync();

 private:
  size_t Index(uint32_t table, uint64_t page) const { return first_[table] + page; }

  std::vector<uint64_t> pages_;
  std::vector<size_t> first_;  // index of each table's first page
  std::vector<uint64_t> generations_;
  std::set<size_t> unsynced_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace dst::integrity
