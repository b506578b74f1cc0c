#include "aggregator/stagelog/log_replay.h"

#include <array>
#include <cerrno>

namespace dst::stagelog {

namespace {

// What the scan makes of one record.
struct Verdict {
  Status io;           // an I/O error: the replay fails
  std::string reason;  // not empty: the log ends here
};

// Reads and checks the record at ring offset `position` (docs/staging-log.md §5.1, rule 3).
// `previous_session` is the session of the record before it (0 for the first), `used` the ring
// bytes the records before it take.
Verdict VerifyRecord(LogDevice& device, const LogSuperblock& sb, uint64_t position,
                     uint64_t expected_sequence, uint64_t previous_session, uint64_t used,
                     RecordHeader* out) {
  std::array<uint8_t, kHeaderSize> header_bytes;
  Verdict v;
  v.io = device.Read(kRingOffset + position, header_bytes);
  if (!v.io.ok()) return v;
  RecordHeader h;
  if (Status st = DecodeRecordHeader(header_bytes, &h); !st.ok()) {
    v.reason = st.message();
    return v;
  }
  if (h.log_uuid != sb.log_uuid) {
    v.reason = "record of another log (" + UuidHex(h.log_uuid) + ")";
  } else if (h.sequence != expected_sequence) {
    v.reason = "sequence " + std::to_string(h.sequence) + " where " +
               std::to_string(expected_sequence) + " belongs";
  } else if (h.session < previous_session || h.session > sb.session) {
    v.reason = "session " + std::to_string(h.session) + " is not between " +
               std::to_string(previous_session) + " and the log's " + std::to_string(sb.session);
  } else if (!KindBelongsTo(h.kind, sb.mode)) {
    v.reason = "a " + std::string(RecordKindName(h.kind)) + " record in a " +
               std::string(LogModeName(sb.mode)) + " log";
  } else if (h.kind == RecordKind::kPadding && position + h.record_size() != sb.ring_size) {
    v.reason = "padding record does not end at the end of the ring";
  } else if (h.kind != RecordKind::kPadding && h.record_size() > sb.ring_size - position) {
    v.reason = "record runs past the end of the ring";
  } else if (used + h.record_size() > sb.ring_size) {
    v.reason = "record would overlap the oldest record";
  }
  if (!v.reason.empty() || !HasPayload(h.kind)) {
    *out = h;
    return v;
  }
  std::vector<uint8_t> payload(h.length);
  v.io = device.Read(kRingOffset + position + kHeaderPageSize, payload);
  if (v.io.ok() && Crc32c(payload) != h.payload_checksum) {
    v.reason = "payload checksum mismatch: torn or corrupted";
  }
  *out = h;
  return v;
}

Status CheckDestaged(const ReplayedLog& log) {
  const LogSuperblock& sb = log.superblock;
  const uint64_t last = log.next_sequence - 1;
  if (last < sb.destaged_sequence) {
    return Status::Error(EIO, "staging log ends at sequence " + std::to_string(last) +
                                  " before the destaged sequence " +
                                  std::to_string(sb.destaged_sequence) + " (" + log.end +
                                  "): the log is damaged");
  }
  if (last > sb.destaged_sequence) {
    const ReplayedRecord& next = log.records[sb.destaged_sequence + 1 - sb.oldest_sequence];
    if (next.position != sb.destaged_position) {
      return Status::Error(EIO, "staging log record " + std::to_string(next.header.sequence) +
                                    " is at ring offset " + std::to_string(next.position) +
                                    ", not at the destaged position " +
                                    std::to_string(sb.destaged_position) + ": the log is damaged");
    }
  }
  return Status::Ok();
}

}  // namespace

std::string UuidHex(const Uuid& uuid) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : uuid) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Status ReadLogSuperblock(LogDevice& device, LogSuperblock* out) {
  if (device.size() < kRingOffset) {
    return Status::Error(ENOENT, "device of " + std::to_string(device.size()) +
                                     " bytes is too small to hold a staging log");
  }
  std::vector<uint8_t> slots(2 * kSlotSize);
  DST_RETURN_IF_ERROR(device.Read(0, slots));
  const std::span<const uint8_t> all(slots);
  return ChooseSuperblock(all.first(kSlotSize), all.subspan(kSlotSize), out);
}

Status ReadPayload(LogDevice& device, const ReplayedRecord& record, std::vector<uint8_t>* out) {
  const RecordHeader& h = record.header;
  out->assign(h.length, 0);
  if (!HasPayload(h.kind)) return Status::Ok();
  DST_RETURN_IF_ERROR(device.Read(record.payload_offset(), *out));
  if (Crc32c(*out) != h.payload_checksum) {
    return Status::Error(EIO, "record " + std::to_string(h.sequence) + " at ring offset " +
                                  std::to_string(record.position) +
                                  ": payload checksum mismatch: torn or corrupted");
  }
  return Status::Ok();
}

Status ReplayLog(LogDevice& device, const Uuid& volume_uuid, ReplayedLog* out) {
  ReplayedLog log;
  DST_RETURN_IF_ERROR(ReadLogSuperblock(device, &log.superblock));
  const LogSuperblock& sb = log.superblock;
  if (sb.volume_uuid != volume_uuid) {
    return Status::Invalid("staging log belongs to volume " + UuidHex(sb.volume_uuid) + ", not " +
                           UuidHex(volume_uuid));
  }
  if (device.size() < sb.log_size) {
    return Status::Invalid("staging log of " + std::to_string(sb.log_size) +
                           " bytes on a device of " + std::to_string(device.size()));
  }
  log.next_sequence = sb.oldest_sequence;
  log.head = sb.oldest_position;
  uint64_t session = 0;
  // Each verified record takes at least a page, so the ring bounds the loop.
  while (true) {
    RecordHeader h;
    const Verdict v = VerifyRecord(device, sb, log.head, log.next_sequence, session, log.used, &h);
    DST_RETURN_IF_ERROR(v.io);
    if (!v.reason.empty()) {
      log.end = "record " + std::to_string(log.next_sequence) + " at ring offset " +
                std::to_string(log.head) + ": " + v.reason;
      break;
    }
    log.records.push_back({h, log.head});
    log.used += h.record_size();
    log.head = (log.head + h.record_size()) % sb.ring_size;
    log.next_sequence = h.sequence + 1;
    session = h.session;
  }
  DST_RETURN_IF_ERROR(CheckDestaged(log));
  *out = std::move(log);
  return Status::Ok();
}

}  // namespace dst::stagelog
