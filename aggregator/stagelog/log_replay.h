// Reading a staging log after a crash (docs/staging-log.md §5): choose the superblock, then scan
// the ring from the oldest retained record by sequence and checksums; the first record that does
// not verify ends the log. The result is what the log holds, in sequence order, with the
// destaged sequence D: what a LogWriter continues from and what the index is built from.
//
// Threading: ReplayLog does blocking I/O on the device and keeps no state; call it before anything
// else uses the device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aggregator/stagelog/log_device.h"
#include "aggregator/stagelog/log_format.h"
#include "common/status.h"

namespace dst::stagelog {

struct ReplayedRecord {
  RecordHeader header;
  uint64_t position = 0;  // ring offset of the header page

  // Device offset of the payload's first byte.
  uint64_t payload_offset() const { return kRingOffset + position + kHeaderPageSize; }
};

struct ReplayedLog {
  LogSuperblock superblock;
  // Records O up to the tail, in sequence order, padding records included.
  std::vector<ReplayedRecord> records;
  uint64_t next_sequence = 1;  // the sequence the next record gets
  uint64_t head = 0;           // ring offset where it goes
  uint64_t used = 0;           // bytes of the ring the records take, padding included
  // Why the scan stopped, for the log line: "record 18 at ring offset 40960: header checksum
  // mismatch: torn or corrupted".
  std::string end;

  uint64_t destaged_sequence() const { return superblock.destaged_sequence; }
};

// Both slots, the newer valid one (ChooseSuperblock). ENOENT: the device holds no staging log.
Status ReadLogSuperblock(LogDevice& device, LogSuperblock* out);

// Reads the whole log. Refuses a log of another volume (EINVAL "belongs to volume ..."), a device
// smaller than the log, and a log that ends before its destaged sequence (EIO): those records were
// durable, so the log is damaged. I/O errors are returned as they are.
Status ReplayLog(LogDevice& device, const Uuid& volume_uuid, ReplayedLog* out);

// Reads and verifies the payload of a write record found by the scan (or appended since).
Status ReadPayload(LogDevice& device, const ReplayedRecord& record, std::vector<uint8_t>* out);

// "0011…ff" for messages.
std::string UuidHex(const Uuid& uuid);

}  // namespace dst::stagelog
