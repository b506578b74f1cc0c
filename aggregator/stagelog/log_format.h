// Staging log format, version 1: the superblock (two alternating slots) and the record headers,
// encoded big-endian. docs/staging-log.md has the byte tables; the offsets below and
// log_format_test's golden bytes keep code and document in step.
//
// Contract: Encode and Decode accept exactly the same values (the Validate functions), so whatever
// is written can be read back and nothing out of range is ever trusted. Decoding checks, in order:
// the magic (ENOENT), the checksum (EIO "torn or corrupted"), the version and flags (ENOTSUP),
// then every field (EINVAL naming it).
//
// Threading: plain values and pure functions; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dst::stagelog {

using Uuid = std::array<uint8_t, 16>;

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kSlotSize = 4096;
inline constexpr uint64_t kRingOffset = 2 * kSlotSize;
inline constexpr uint64_t kMinRingSize = 64 * 1024;
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kHeaderPageSize = kPageSize;  // a record's header page
inline constexpr size_t kHeaderSize = 128;              // the checksummed part of it
inline constexpr uint64_t kMaxVolumeEnd = uint64_t{1} << 63;

// Superblock flags (incompatible features: a reader that does not know one refuses the log).
// Write-through (docs/staging-log.md §10): the members have every acknowledged write and the log
// holds before-image records only, for snapshots. A reader that replayed such a log as write-back
// would apply old data over new, which is why it is a flag and not a field.
inline constexpr uint32_t kFlagWriteThrough = 1;
inline constexpr uint32_t kKnownFlags = kFlagWriteThrough;

inline constexpr char kSuperblockMagic[8] = {'D', 'S', 'T', 'S', 'L', 'O', 'G', '1'};
inline constexpr char kRecordMagic[8] = {'D', 'S', 'T', 'S', 'R', 'E', 'C', '1'};

// Byte offsets inside a superblock slot (docs/staging-log.md §3.1).
namespace sb_offsets {
inline constexpr size_t kMagic = 0;
inline constexpr size_t kVersion = 8;
inline constexpr size_t kFlags = 12;
inline constexpr size_t kChecksum = 16;
inline constexpr size_t kPageSize = 20;
inline constexpr size_t kEvent = 24;
inline constexpr size_t kVolumeUuid = 32;
inline constexpr size_t kLogUuid = 48;
inline constexpr size_t kLogSize = 64;
inline constexpr size_t kRingOffset = 72;
inline constexpr size_t kRingSize = 80;
inline constexpr size_t kCreated = 88;
inline constexpr size_t kUpdated = 96;
inline constexpr size_t kSession = 104;
inline constexpr size_t kDestagedSequence = 112;
inline constexpr size_t kDestagedPosition = 120;
inline constexpr size_t kOldestSequence = 128;
inline constexpr size_t kOldestPosition = 136;
inline constexpr size_t kOldestTime = 144;
inline constexpr size_t kEnd = 152;  // the rest of the slot is reserved: zero
}  // namespace sb_offsets

// Byte offsets inside a record header (docs/staging-log.md §4.1).
namespace rec_offsets {
inline constexpr size_t kMagic = 0;
inline constexpr size_t kChecksum = 8;
inline constexpr size_t kKind = 12;
inline constexpr size_t kSequence = 16;
inline constexpr size_t kSession = 24;
inline constexpr size_t kLogUuid = 32;
inline constexpr size_t kVolumeOffset = 48;
inline constexpr size_t kLength = 56;
inline constexpr size_t kTime = 64;
inline constexpr size_t kPayloadSize = 72;
inline constexpr size_t kPayloadChecksum = 80;
inline constexpr size_t kEnd = 84;  // reserved zero up to kHeaderSize
}  // namespace rec_offsets

// How a log is used (--log-mode): write-back acknowledges writes once the log has them and
// destages them later; write-through acknowledges after the members and logs before-images.
enum class LogMode { kWriteBack, kWriteThrough };
std::string_view LogModeName(LogMode mode);  // "write-back", "write-through"
// "write-back" or "write-through"; EINVAL otherwise.
Status ParseLogMode(std::string_view text, LogMode* out);

struct LogSuperblock {
  uint64_t event = 0;
  LogMode mode = LogMode::kWriteBack;  // flags bit kFlagWriteThrough
  Uuid volume_uuid{};
  Uuid log_uuid{};
  uint64_t log_size = 0;
  uint64_t ring_size = 0;  // the ring is at kRingOffset
  uint64_t created = 0;    // ns since the Unix epoch
  uint64_t updated = 0;    // ns since the Unix epoch
  uint64_t session = 0;
  uint64_t destaged_sequence = 0;  // D: records up to D are on the members
  uint64_t destaged_position = 0;  // ring offset of record D + 1
  uint64_t oldest_sequence = 1;    // O: the first record the log holds
  uint64_t oldest_position = 0;    // ring offset of record O
  uint64_t oldest_time = 0;        // record O's time; 0 while the log holds none

  bool operator==(const LogSuperblock&) const = default;
};

// On-disk codes: never renumber.
enum class RecordKind : uint8_t {
  kWrite = 1,
  kTrim = 2,
  kZero = 3,
  kPadding = 4,  // fills the ring up to its end; the next record is at 0
  // Write-through logs only: the volume's content of the range just before a write, trim or zero
  // changed it; the payload is that old data.
  kBeforeImage = 5,
};
// Whether records of `kind` carry their range's bytes as payload (write and before-image).
inline bool HasPayload(RecordKind kind) {
  return kind == RecordKind::kWrite || kind == RecordKind::kBeforeImage;
}
// Whether a log in `mode` may hold records of `kind` (padding: both).
bool KindBelongsTo(RecordKind kind, LogMode mode);
std::string_view RecordKindName(
    RecordKind kind);  // "write", "trim", "zero", "padding", "before-image"

struct RecordHeader {
  RecordKind kind = RecordKind::kWrite;
  uint64_t sequence = 0;
  uint64_t session = 0;
  Uuid log_uuid{};
  uint64_t volume_offset = 0;
  uint64_t length = 0;
  uint64_t time = 0;          // ns since the Unix epoch
  uint64_t payload_size = 0;  // bytes after the header page, a multiple of kPageSize
  uint32_t payload_checksum = 0;

  // The header page and the payload.
  uint64_t record_size() const { return kHeaderPageSize + payload_size; }
  bool operator==(const RecordHeader&) const = default;
};

// The ring's size for a log of `log_size` bytes (docs/staging-log.md §1); may be below
// kMinRingSize, which ValidateSuperblock refuses.
uint64_t RingSizeFor(uint64_t log_size);
inline uint64_t RoundUpToPage(uint64_t n) {
  return (n + kPageSize - 1) / kPageSize * kPageSize;
}

Status ValidateSuperblock(const LogSuperblock& sb);
Status EncodeSuperblock(const LogSuperblock& sb, std::span<uint8_t, kSlotSize> out);
// `in` must be exactly one slot.
Status DecodeSuperblock(std::span<const uint8_t> in, LogSuperblock* out);

// The slot an update with event counter `event` goes to, and where that slot is.
inline constexpr uint32_t NextSlot(uint64_t event) {
  return static_cast<uint32_t>(event % 2);
}
inline constexpr uint64_t SlotOffset(uint32_t slot) {
  return slot * kSlotSize;
}
// The valid slot with the higher event (a slot is valid when it decodes and its event belongs in
// it). Either slot from a newer format (ENOTSUP) is an error even if the other is valid; neither
// valid: an error naming both reasons (ENOENT when neither has the magic).
Status ChooseSuperblock(std::span<const uint8_t> slot0, std::span<const uint8_t> slot1,
                        LogSuperblock* out);

// The record's own rules (docs/staging-log.md §4.2), without its place in the ring.
Status ValidateRecordHeader(const RecordHeader& h);
// Writes the kHeaderSize header bytes; the caller zeroes the rest of the header page.
Status EncodeRecordHeader(const RecordHeader& h, std::span<uint8_t, kHeaderSize> out);
// `in` holds at least kHeaderSize bytes; only the first kHeaderSize are read.
Status DecodeRecordHeader(std::span<const uint8_t> in, RecordHeader* out);

// CRC32C as the format stores it.
uint32_t Crc32c(std::span<const uint8_t> data);

}  // namespace dst::stagelog
