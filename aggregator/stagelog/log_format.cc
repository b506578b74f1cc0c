#include "aggregator/stagelog/log_format.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/nbd_protocol.h"

namespace dst::stagelog {

namespace {

using nbd::LoadBE32;
using nbd::LoadBE64;
using nbd::StoreBE32;
using nbd::StoreBE64;

bool AllZero(const uint8_t* begin, const uint8_t* end) {
  return std::all_of(begin, end, [](uint8_t b) { return b == 0; });
}

// CRC32C of `bytes` with the 4-byte checksum field at `field` taken as zero.
uint32_t ChecksumWithFieldZero(std::span<const uint8_t> bytes, size_t field) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  StoreBE32(copy.data() + field, 0);
  return Crc32c(copy);
}

Status ValidatePosition(const char* name, uint64_t position, uint64_t ring_size) {
  if (position % kPageSize != 0 || position >= ring_size) {
    return Status::Invalid(std::string("log superblock: ") + name + " " + std::to_string(position) +
                           " is not a page-aligned ring offset below the ring size " +
                           std::to_string(ring_size));
  }
  return Status::Ok();
}

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> data) {
  Checksummer crc = std::move(*Checksummer::Create(ChecksumAlgorithm::kCrc32c).checksummer);
  return LoadBE32(crc.Compute(data).bytes.data());
}

std::string_view RecordKindName(RecordKind kind) {
  switch (kind) {
    case RecordKind::kWrite:
      return "write";
    case RecordKind::kTrim:
      return "trim";
    case RecordKind::kZero:
      return "zero";
    case RecordKind::kPadding:
      return "padding";
    case RecordKind::kBeforeImage:
      return "before-image";
  }
  return "unknown";
}

bool KindBelongsTo(RecordKind kind, LogMode mode) {
  if (kind == RecordKind::kPadding) return true;
  return (kind == RecordKind::kBeforeImage) == (mode == LogMode::kWriteThrough);
}

std::string_view LogModeName(LogMode mode) {
  return mode == LogMode::kWriteThrough ? "write-through" : "write-back";
}

Status ParseLogMode(std::string_view text, LogMode* out) {
  if (text == "write-back") {
    *out = LogMode::kWriteBack;
  } else if (text == "write-through") {
    *out = LogMode::kWriteThrough;
  } else {
    return Status::Invalid("expected write-back or write-through");
  }
  return Status::Ok();
}

uint64_t RingSizeFor(uint64_t log_size) {
  if (log_size < kRingOffset) return 0;
  return (log_size - kRingOffset) / kPageSize * kPageSize;
}

// ---------------------------------------------------------------------------
// Superblock.

Status ValidateSuperblock(const LogSuperblock& sb) {
  if (sb.ring_size % kPageSize != 0 || sb.ring_size < kMinRingSize) {
    return Status::Invalid("log superblock: ring size " + std::to_string(sb.ring_size) +
                           " is not a multiple of 4096 of at least " +
                           std::to_string(kMinRingSize));
  }
  if (sb.log_size >= kMaxVolumeEnd || sb.ring_size > sb.log_size - kRingOffset ||
      sb.log_size < kRingOffset) {
    return Status::Invalid("log superblock: the ring (" + std::to_string(sb.ring_size) +
                           " bytes at 8192) does not fit the log size " +
                           std::to_string(sb.log_size));
  }
  DST_RETURN_IF_ERROR(ValidatePosition("destaged position", sb.destaged_position, sb.ring_size));
  DST_RETURN_IF_ERROR(ValidatePosition("oldest position", sb.oldest_position, sb.ring_size));
  if (sb.destaged_sequence >= kMaxVolumeEnd) {
    return Status::Invalid("log superblock: destaged sequence " +
                           std::to_string(sb.destaged_sequence) + " is not below 2^63");
  }
  if (sb.oldest_sequence == 0 || sb.oldest_sequence > sb.destaged_sequence + 1) {
    return Status::Invalid("log superblock: oldest sequence " + std::to_string(sb.oldest_sequence) +
                           " is not between 1 and the destaged sequence " +
                           std::to_string(sb.destaged_sequence) + " + 1");
  }
  return Status::Ok();
}

Status EncodeSuperblock(const LogSuperblock& sb, std::span<uint8_t, kSlotSize> out) {
  DST_RETURN_IF_ERROR(ValidateSuperblock(sb));
  namespace o = sb_offsets;
  uint8_t* p = out.data();
  std::fill(out.begin(), out.end(), 0);
  std::copy_n(kSuperblockMagic, sizeof kSuperblockMagic, p + o::kMagic);
  StoreBE32(p + o::kVersion, kFormatVersion);
  StoreBE32(p + o::kFlags, sb.mode == LogMode::kWriteThrough ? kFlagWriteThrough : 0);
  StoreBE32(p + o::kPageSize, kPageSize);
  StoreBE64(p + o::kEvent, sb.event);
  std::copy(sb.volume_uuid.begin(), sb.volume_uuid.end(), p + o::kVolumeUuid);
  std::copy(sb.log_uuid.begin(), sb.log_uuid.end(), p + o::kLogUuid);
  StoreBE64(p + o::kLogSize, sb.log_size);
  StoreBE64(p + o::kRingOffset, kRingOffset);
  StoreBE64(p + o::kRingSize, sb.ring_size);
  StoreBE64(p + o::kCreated, sb.created);
  StoreBE64(p + o::kUpdated, sb.updated);
  StoreBE64(p + o::kSession, sb.session);
  StoreBE64(p + o::kDestagedSequence, sb.destaged_sequence);
  StoreBE64(p + o::kDestagedPosition, sb.destaged_position);
  StoreBE64(p + o::kOldestSequence, sb.oldest_sequence);
  StoreBE64(p + o::kOldestPosition, sb.oldest_position);
  StoreBE64(p + o::kOldestTime, sb.oldest_time);
  StoreBE32(p + o::kChecksum, ChecksumWithFieldZero(out, o::kChecksum));
  return Status::Ok();
}

Status DecodeSuperblock(std::span<const uint8_t> in, LogSuperblock* out) {
  namespace o = sb_offsets;
  if (in.size() != kSlotSize) {
    return Status::Invalid("log superblock slot is " + std::to_string(in.size()) +
                           " bytes, not 4096");
  }
  const uint8_t* p = in.data();
  if (!std::equal(kSuperblockMagic, kSuperblockMagic + 8, p)) {
    return Status::Error(ENOENT, "no staging log superblock (magic DSTSLOG1 not found)");
  }
  if (LoadBE32(p + o::kChecksum) != ChecksumWithFieldZero(in, o::kChecksum)) {
    return Status::Error(EIO, "log superblock checksum mismatch: torn or corrupted");
  }
  const uint32_t version = LoadBE32(p + o::kVersion);
  const uint32_t flags = LoadBE32(p + o::kFlags);
  if (version != kFormatVersion || (flags & ~kKnownFlags) != 0) {
    return Status::Error(ENOTSUP, "staging log format version " + std::to_string(version) +
                                      " flags " + std::to_string(flags) +
                                      " is not supported (this dst reads version 1, flags 0 or 1)");
  }
  if (LoadBE32(p + o::kPageSize) != kPageSize) {
    return Status::Invalid("log superblock: page size " +
                           std::to_string(LoadBE32(p + o::kPageSize)) + " is not 4096");
  }
  if (LoadBE64(p + o::kRingOffset) != kRingOffset) {
    return Status::Invalid("log superblock: ring offset " +
                           std::to_string(LoadBE64(p + o::kRingOffset)) + " is not 8192");
  }
  if (!AllZero(p + o::kEnd, p + kSlotSize)) {
    return Status::Invalid("log superblock: reserved bytes are not zero");
  }
  LogSuperblock sb;
  sb.mode = (flags & kFlagWriteThrough) != 0 ? LogMode::kWriteThrough : LogMode::kWriteBack;
  sb.event = LoadBE64(p + o::kEvent);
  std::copy_n(p + o::kVolumeUuid, 16, sb.volume_uuid.begin());
  std::copy_n(p + o::kLogUuid, 16, sb.log_uuid.begin());
  sb.log_size = LoadBE64(p + o::kLogSize);
  sb.ring_size = LoadBE64(p + o::kRingSize);
  sb.created = LoadBE64(p + o::kCreated);
  sb.updated = LoadBE64(p + o::kUpdated);
  sb.session = LoadBE64(p + o::kSession);
  sb.destaged_sequence = LoadBE64(p + o::kDestagedSequence);
  sb.destaged_position = LoadBE64(p + o::kDestagedPosition);
  sb.oldest_sequence = LoadBE64(p + o::kOldestSequence);
  sb.oldest_position = LoadBE64(p + o::kOldestPosition);
  sb.oldest_time = LoadBE64(p + o::kOldestTime);
  DST_RETURN_IF_ERROR(ValidateSuperblock(sb));
  *out = sb;
  return Status::Ok();
}

Status ChooseSuperblock(std::span<const uint8_t> slot0, std::span<const uint8_t> slot1,
                        LogSuperblock* out) {
  LogSuperblock sbs[2];
  Status st[2];
  const std::span<const uint8_t> slots[2] = {slot0, slot1};
  for (uint32_t i = 0; i < 2; ++i) {
    st[i] = DecodeSuperblock(slots[i], &sbs[i]);
    if (st[i].err() == ENOTSUP) return st[i].Wrap("log superblock slot " + std::to_string(i));
    if (st[i].ok() && NextSlot(sbs[i].event) != i) {
      st[i] = Status::Error(EIO, "log superblock with event " + std::to_string(sbs[i].event) +
                                     " belongs in slot " + std::to_string(NextSlot(sbs[i].event)));
    }
  }
  if (!st[0].ok() && !st[1].ok()) {
    const int err = st[0].err() == ENOENT && st[1].err() == ENOENT ? ENOENT : EIO;
    return Status::Error(err, "no valid staging log superblock: slot 0: " + st[0].message() +
                                  "; slot 1: " + st[1].message());
  }
  if (st[0].ok() && (!st[1].ok() || sbs[0].event > sbs[1].event)) {
    *out = sbs[0];
  } else {
    *out = sbs[1];
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Record headers.

Status ValidateRecordHeader(const RecordHeader& h) {
  const std::string what = "record " + std::to_string(h.sequence);
  if (h.sequence == 0 || h.sequence >= kMaxVolumeEnd) {
    return Status::Invalid(what + ": sequence is not between 1 and 2^63 - 1");
  }
  if (h.payload_size % kPageSize != 0) {
    return Status::Invalid(what + ": payload size " + std::to_string(h.payload_size) +
                           " is not a multiple of 4096");
  }
  switch (h.kind) {
    case RecordKind::kPadding:
      if (h.volume_offset != 0 || h.length != 0 || h.payload_checksum != 0) {
        return Status::Invalid(what + ": a padding record has a volume range or a checksum");
      }
      return Status::Ok();
    case RecordKind::kWrite:
    case RecordKind::kTrim:
    case RecordKind::kZero:
    case RecordKind::kBeforeImage:
      break;
    default:
      return Status::Invalid(what + ": unknown kind " +
                             std::to_string(static_cast<uint8_t>(h.kind)));
  }
  if (h.length == 0 || h.volume_offset >= kMaxVolumeEnd ||
      h.length > kMaxVolumeEnd - h.volume_offset) {
    return Status::Invalid(what + ": volume range " + std::to_string(h.volume_offset) + "+" +
                           std::to_string(h.length) + " is empty or ends past 2^63");
  }
  const uint64_t payload = HasPayload(h.kind) ? RoundUpToPage(h.length) : 0;
  if (h.payload_size != payload) {
    return Status::Invalid(what + ": payload size " + std::to_string(h.payload_size) + " of a " +
                           std::string(RecordKindName(h.kind)) + " of " + std::to_string(h.length) +
                           " bytes is not " + std::to_string(payload));
  }
  if (!HasPayload(h.kind) && h.payload_checksum != 0) {
    return Status::Invalid(what + ": a " + std::string(RecordKindName(h.kind)) +
                           " record has a payload checksum");
  }
  return Status::Ok();
}

Status EncodeRecordHeader(const RecordHeader& h, std::span<uint8_t, kHeaderSize> out) {
  DST_RETURN_IF_ERROR(ValidateRecordHeader(h));
  namespace o = rec_offsets;
  uint8_t* p = out.data();
  std::fill(out.begin(), out.end(), 0);
  std::copy_n(kRecordMagic, sizeof kRecordMagic, p + o::kMagic);
  p[o::kKind] = static_cast<uint8_t>(h.kind);
  StoreBE64(p + o::kSequence, h.sequence);
  StoreBE64(p + o::kSession, h.session);
  std::copy(h.log_uuid.begin(), h.log_uuid.end(), p + o::kLogUuid);
  StoreBE64(p + o::kVolumeOffset, h.volume_offset);
  StoreBE64(p + o::kLength, h.length);
  StoreBE64(p + o::kTime, h.time);
  StoreBE64(p + o::kPayloadSize, h.payload_size);
  StoreBE32(p + o::kPayloadChecksum, h.payload_checksum);
  StoreBE32(p + o::kChecksum, ChecksumWithFieldZero(out, o::kChecksum));
  return Status::Ok();
}

Status DecodeRecordHeader(std::span<const uint8_t> in, RecordHeader* out) {
  namespace o = rec_offsets;
  if (in.size() < kHeaderSize) {
    return Status::Invalid("record header is " + std::to_string(in.size()) + " bytes, not 128");
  }
  const std::span<const uint8_t> header = in.first(kHeaderSize);
  const uint8_t* p = header.data();
  if (!std::equal(kRecordMagic, kRecordMagic + 8, p)) {
    return Status::Error(ENOENT, "no log record (magic DSTSREC1 not found)");
  }
  if (LoadBE32(p + o::kChecksum) != ChecksumWithFieldZero(header, o::kChecksum)) {
    return Status::Error(EIO, "record header checksum mismatch: torn or corrupted");
  }
  if (!AllZero(p + o::kKind + 1, p + o::kSequence) || !AllZero(p + o::kEnd, p + kHeaderSize)) {
    return Status::Invalid("record header: reserved bytes are not zero");
  }
  RecordHeader h;
  h.kind = static_cast<RecordKind>(p[o::kKind]);
  h.sequence = LoadBE64(p + o::kSequence);
  h.session = LoadBE64(p + o::kSession);
  std::copy_n(p + o::kLogUuid, 16, h.log_uuid.begin());
  h.volume_offset = LoadBE64(p + o::kVolumeOffset);
  h.length = LoadBE64(p + o::kLength);
  h.time = LoadBE64(p + o::kTime);
  h.payload_size = LoadBE64(p + o::kPayloadSize);
  h.payload_checksum = LoadBE32(p + o::kPayloadChecksum);
  DST_RETURN_IF_ERROR(ValidateRecordHeader(h));
  *out = h;
  return Status::Ok();
}

}  // namespace dst::stagelog
