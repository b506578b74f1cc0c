// The staging log's in-memory index: which volume bytes the log holds newer than the members.
// Each volume range maps to the newest record covering it; a later record splits the extents of
// older ones it overlaps. A read range resolves into pieces, in volume order, each either from a
// record (its ring position and the offset inside its payload; trim and zero records read as
// zeros) or from the members (a gap). "As of sequence S" lookups give the volume as it was after
// record S, for snapshots: the newest record <= S, else the members, which is right only while the
// members hold no record after S (S >= the destaged sequence D, which is checked).
//
// Threading: NOT thread-safe; the owner (the volume's strand) calls everything.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "aggregator/stagelog/log_format.h"
#include "aggregator/stagelog/log_replay.h"
#include "common/status.h"

namespace dst::stagelog {

struct ReadPiece {
  uint64_t offset = 0;  // volume range
  uint64_t length = 0;
  bool from_log = false;  // false: read it from the members
  // From the log only:
  uint64_t sequence = 0;
  RecordKind kind = RecordKind::kWrite;  // kTrim and kZero read as zeros
  uint64_t position = 0;                 // ring offset of the record's header page
  uint64_t offset_in_record = 0;         // where in the record's payload the piece starts

  bool operator==(const ReadPiece&) const = default;
};

class LogIndex {
 public:
  // `record` is newer than every record added before; padding records are ignored. Records are
  // added in sequence order, from replay and then from the writer.
  void Add(const ReplayedRecord& record);
  // The newest data of [offset, offset + length).
  std::vector<ReadPiece> Lookup(uint64_t offset, uint64_t length) const;
  // The volume as of `sequence`. EINVAL when `sequence` is below the destaged sequence (the
  // members hold newer data there) or above the newest record added.
  Status LookupAsOf(uint64_t offset, uint64_t length, uint64_t sequence,
                    std::vector<ReadPiece>* out) const;
  // Write-through logs (before-image records): the volume as of `sequence` is the members now,
  // each range taken instead from the before-image of the oldest record after `sequence` that
  // covers it. EINVAL when `sequence` is below the destaged sequence (there: the oldest point,
  // O - 1; the before-images of the records up to it are gone) or above the newest record added.
  Status LookupBeforeImages(uint64_t offset, uint64_t length, uint64_t sequence,
                            std::vector<ReadPiece>* out) const;
  // Whether a record after `sequence` covers part of [offset, offset + length).
  bool CoveredAfter(uint64_t offset, uint64_t length, uint64_t sequence) const;
  // Records up to `sequence` are on the members (never goes back).
  void SetDestaged(uint64_t sequence);
  // Forgets records up to `sequence` (at most the destaged sequence): their ranges read from the
  // members again, unless a newer record covers them.
  void DropThrough(uint64_t sequence);

  uint64_t destaged_sequence() const { return destaged_; }
  uint64_t last_sequence() const { return last_; }
  size_t extents() const { return extents_.size(); }
  size_t records() const { return records_.size(); }

 private:
  struct Record {
    RecordKind kind;
    uint64_t volume_offset;
    uint64_t length;
    uint64_t position;
  };
  struct Extent {
    uint64_t end;
    uint64_t sequence;  // the record it comes from
  };

  ReadPiece FromRecord(uint64_t sequence, uint64_t offset, uint64_t length) const;
  Status CheckPoint(uint64_t sequence) const;
  // Each record from `first` on, in the iteration order given, takes what no earlier one took;
  // the members the rest.
  template <typename It>
  std::vector<ReadPiece> Resolve(uint64_t offset, uint64_t length, It first, It last) const;
  static ReadPiece FromMembers(uint64_t offset, uint64_t length);

  std::map<uint64_t, Record> records_;  // by sequence
  std::map<uint64_t, Extent> extents_;  // by start; never overlapping
  uint64_t destaged_ = 0;
  uint64_t last_ = 0;
};

}  // namespace dst::stagelog
