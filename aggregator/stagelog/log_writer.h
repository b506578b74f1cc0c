// Appending to a staging log (docs/staging-log.md): records go to the ring's head, wrapping with a
// padding record; Commit() makes every record appended so far durable with one sync (group
// commit); SetDestaged() and Release() move the destaged sequence D and the oldest retained record
// O in the superblock, durably. Append refuses (ENOSPC, "staging log full") when the record does
// not fit between the head and O: the caller waits for the destager and Release(), it never gets
// an error because a member is slow.
//
// Order of durability: Release() syncs the new O before any record can be written into the space
// it frees, so the superblock never points at overwritten records; Open() increments the session
// durably before the first append, so records a crash left past the tail never verify after new
// ones (docs/staging-log.md §5.2).
//
// After a failed device write or sync the writer is failed: every later call returns that error
// (EIO), since what is on the device is no longer known. Reopen it through ReplayLog.
//
// Threading: NOT thread-safe; one owner (the volume's strand) calls everything. The calls block
// on the device.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>

#include "aggregator/stagelog/log_device.h"
#include "aggregator/stagelog/log_format.h"
#include "aggregator/stagelog/log_replay.h"
#include "common/status.h"

namespace dst::stagelog {

// Nanoseconds since the Unix epoch.
using LogClock = std::function<uint64_t()>;
uint64_t SystemClockNanos();

struct FormatOptions {
  Uuid volume_uuid{};
  Uuid log_uuid{};   // random, new for every format
  uint64_t now = 0;  // ns since the Unix epoch
  LogMode mode = LogMode::kWriteBack;
};

// Writes a new, empty log over the whole device (both superblock slots, then a sync). EINVAL when
// the device is too small for a ring of kMinRingSize.
Status FormatLog(LogDevice& device, const FormatOptions& options);

class LogWriter {
 public:
  // Continues `log` (from ReplayLog on the same device): increments the session durably.
  static Status Open(LogDevice* device, const ReplayedLog& log, LogClock clock,
                     std::unique_ptr<LogWriter>* out);

  // Appends one write (data.size() == length), trim or zero record at the head; not durable until
  // Commit(). ENOSPC "staging log full" writes nothing; EINVAL for a range the format refuses or a
  // write longer than max_write_length(). `out`, if given, receives the record as replay would.
  Status Append(RecordKind kind, uint64_t volume_offset, uint64_t length,
                std::span<const uint8_t> data, ReplayedRecord* out = nullptr);
  // Every record appended so far is durable when it returns OK (one sync for all of them).
  Status Commit();
  // Records up to `sequence` (at most durable_sequence()) are on the members: records D durably.
  Status SetDestaged(uint64_t sequence);
  // Frees the space of records up to `sequence` (at most the destaged sequence): records O durably.
  // A write-through log destages nothing (the members have every record's write already): there
  // any durable record may be released, and D follows O - 1.
  Status Release(uint64_t sequence);

  uint64_t next_sequence() const { return next_sequence_; }
  uint64_t durable_sequence() const { return durable_sequence_; }
  uint64_t destaged_sequence() const { return sb_.destaged_sequence; }
  uint64_t oldest_sequence() const { return sb_.oldest_sequence; }
  uint64_t session() const { return sb_.session; }
  uint64_t ring_size() const { return sb_.ring_size; }
  uint64_t used() const { return used_; }
  uint64_t head() const { return head_; }
  // The longest write one record holds: a record is at most half the ring (in whole pages), so
  // one always fits once the records before it are released.
  uint64_t max_write_length() const {
    return sb_.ring_size / 2 / kPageSize * kPageSize - kHeaderPageSize;
  }
  const LogSuperblock& superblock() const { return sb_; }
  LogMode mode() const { return sb_.mode; }

 private:
  struct Entry {
    uint64_t sequence;
    uint64_t position;
    uint64_t size;
    uint64_t time;
  };

  LogWriter(LogDevice* device, LogClock clock) : device_(device), clock_(std::move(clock)) {}
  Status CheckUsable() const;
  Status Fail(Status status);
  Status WriteRecord(RecordHeader header, std::span<const uint8_t> data, ReplayedRecord* out);
  Status WriteSuperblock();
  // Ring offset of the record with `sequence`, or the head when it is next_sequence_.
  uint64_t PositionOf(uint64_t sequence) const;

  LogDevice* device_;
  LogClock clock_;
  LogSuperblock sb_;           // as last written, except while WriteSuperblock runs
  std::deque<Entry> records_;  // O up to next_sequence_ - 1
  uint64_t next_sequence_ = 1;
  uint64_t durable_sequence_ = 0;
  uint64_t head_ = 0;
  uint64_t used_ = 0;
  Status failed_;
};

}  // namespace dst::stagelog
