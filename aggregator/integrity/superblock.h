// Member format, superblock: what a member says about itself and its volume, encoded big-endian
// into one 4096-byte slot. docs/format.md has the byte tables; the constants below and
// superblock_test's golden bytes keep code and document in step.
//
// Versions: linear and stripe volumes are written in version 1, mirror and raid10 volumes in
// version 2, which adds the fields that track copies (generation, ownership, per-slot state) in
// the bytes version 1 leaves zero. This code reads and writes both; older code refuses version 2
// as "not supported". A version 1 superblock carries the version 2 fields at their defaults
// (copies 1, everything else zero): Decode never reads them from a version 1 slot, and Encode
// refuses a version 1 superblock whose version 2 fields are set.
//
// Write protocol (the caller does the I/O): a superblock with event counter E is written to slot
// NextSlot(E) = E % 2, then the member is flushed; only after the flush is it current. Each
// update bumps E, so writes alternate and a torn write can only damage the slot that held the
// older copy: ChooseSlot then still finds the newer intact one. Creating a member writes both
// slots (events 0 and 1) so that no stale superblock survives from an earlier use of the export.
//
// Contract: Encode() and Decode() accept exactly the same superblocks (ValidateSuperblock()), so
// whatever is written can be read back and nothing out of range is ever trusted. Decode checks, in
// order: the magic (ENOENT "no dst superblock"), the self-checksum (EIO "torn or corrupted"), the
// version and flags (ENOTSUP), then every field (EINVAL naming it). The magic, version, flags and
// checksum fields are the same in every format version, so a newer superblock is recognised as
// such rather than taken for a torn one.
//
// Threading: plain values and pure functions; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "aggregator/integrity/member_format.h"
#include "aggregator/volume/layout.h"
#include "common/checksum.h"
#include "common/key_slot.h"
#include "common/status.h"

namespace dst::integrity {

inline constexpr char kMagic[8] = {'D', 'S', 'T', 'M', 'E', 'M', 'B', '1'};
// The member-state array is fixed in the slot; a volume has at most this many members.
inline constexpr uint32_t kMaxMembers = 64;
inline constexpr size_t kMaxNameLength = 64;  // bytes of UTF-8, NUL-padded on disk
// Previous generations a version 2 superblock remembers.
inline constexpr size_t kHistoryLength = 2;
// Ownership epochs stay below 2^31, so that as the high half of a plugin fence epoch they keep it
// below 2^63 (docs/nbdkit-plugin.md).
inline constexpr uint64_t kMaxOwnershipEpoch = (uint64_t{1} << 31) - 1;

// Byte offsets of the fields inside a slot (see docs/format.md).
namespace offsets {
inline constexpr size_t kMagic = 0;
inline constexpr size_t kVersion = 8;
inline constexpr size_t kFlags = 12;
inline constexpr size_t kChecksum = 16;
inline constexpr size_t kEvent = 24;
inline constexpr size_t kCreated = 32;
inline constexpr size_t kVolumeUuid = 40;
inline constexpr size_t kMemberUuid = 56;
inline constexpr size_t kName = 72;
inline constexpr size_t kMemberIndex = 136;
inline constexpr size_t kMemberCount = 140;
inline constexpr size_t kLayout = 144;
inline constexpr size_t kAlgorithm = 145;
inline constexpr size_t kState = 146;
inline constexpr size_t kBlockSize = 148;
inline constexpr size_t kChunkSize = 152;
inline constexpr size_t kRegionSize = 160;
inline constexpr size_t kMemberSize = 168;
inline constexpr size_t kVolumeSize = 176;
inline constexpr size_t kSuperblocks = 184;  // each area: offset u64, size u64
inline constexpr size_t kBitmap = 200;
inline constexpr size_t kTable = 216;
inline constexpr size_t kData = 232;
inline constexpr size_t kKeyId = 256;
inline constexpr size_t kMemberStates = 288;
inline constexpr size_t kEndV1 = 352;  // version 1: the rest of the slot is zero
// Version 2 only.
inline constexpr size_t kCopies = 352;
inline constexpr size_t kGeneration = 360;
inline constexpr size_t kHistory = 376;  // kHistoryLength UUIDs
inline constexpr size_t kMapEpoch = 408;
inline constexpr size_t kOwnershipEpoch = 416;
inline constexpr size_t kOwnerUuid = 424;
inline constexpr size_t kMissedWrites = 440;  // an area: offset u64, size u64
inline constexpr size_t kSlotFlags = 456;     // u8 per slot
inline constexpr size_t kStaleSince = 520;    // u64 per slot
inline constexpr size_t kCursor = 1032;       // u64 per slot
inline constexpr size_t kSlotMembers = 1544;  // a UUID per slot
// The volume's scrub (ScrubRecord).
inline constexpr size_t kScrubMode = 2568;           // u8
inline constexpr size_t kScrubFlags = 2569;          // u8: kScrubPaused
inline constexpr size_t kScrubLastResult = 2570;     // u8
inline constexpr size_t kScrubCursor = 2576;         // u64, volume blocks
inline constexpr size_t kScrubErrors = 2584;         // u64
inline constexpr size_t kScrubLastCompleted = 2592;  // u64, seconds since the Unix epoch
inline constexpr size_t kEndV2 = 2600;               // version 2: the rest of the slot is zero
// Table tags (kFlagTableTags), either version: the table tag area, offset u64 and size u64.
inline constexpr size_t kTableTags = 2600;
// Encrypted volumes (kFlagEncrypted), either version: kKeySlots slots of kKeySlotSize bytes.
inline constexpr size_t kKeySlotArea = 3072;
}  // namespace offsets

// Feature flags: a reader that does not know one refuses the superblock (ENOTSUP).
inline constexpr uint32_t kFlagEncrypted = 1u << 0;  // AES-XTS data, MACs in the table, key slots
// Keyed volumes: every table page has a tag page (docs/format.md §9); geometry.params.table_tags
// says the same and geometry.table_tags is the area.
inline constexpr uint32_t kFlagTableTags = 1u << 1;
inline constexpr uint32_t kKnownFlags = kFlagEncrypted | kFlagTableTags;

using Uuid = std::array<uint8_t, 16>;
using KeyId = std::array<uint8_t, 32>;

// An unset UUID or key identity is all zeros.
template <size_t N>
bool IsZero(const std::array<uint8_t, N>& id) {
  for (uint8_t b : id)
    if (b != 0) return false;
  return true;
}
using KeySlotBytes = std::array<uint8_t, kKeySlotSize>;  // one encoded key slot (key_slot.h)

// On-disk codes: never renumber.
enum class VolumeState : uint8_t {
  kClean = 1,  // stopped in order: every checksum is durable, the bitmap is empty
  kDirty = 2,  // in use or crashed: dirty regions need their checksums recomputed at assembly
};
// A member's (slot's) state. Version 1 knows 1 to 3 only.
enum class MemberState : uint8_t {
  kUnused = 0,  // index >= member count
  kActive = 1,  // current: receives every write
  kFailed = 2,
  kMissing = 3,
  kStale = 4,       // has missed writes since stale_since; resynced from the missed-write maps
  kRebuilding = 5,  // getting a full copy; cursor is valid
  kSpare = 6,
  kResyncing = 7,  // getting the regions it missed; cursor is valid
};
inline constexpr uint8_t kMaxMemberStateV1 = 3;
inline constexpr uint8_t kMaxMemberStateV2 = 7;

// Bits of a version 2 slot's flags.
inline constexpr uint8_t kSlotWriteMostly = 1 << 0;  // read from it only when no other copy can
inline constexpr uint8_t kSlotWantReplacement = 1 << 1;
inline constexpr uint8_t kKnownSlotFlags = kSlotWriteMostly | kSlotWantReplacement;

// On-disk codes of a scrub (docs/redundancy.md, "Scrub"): never renumber.
enum class ScrubMode : uint8_t {
  kNone = 0,    // no scrub under way
  kCheck = 1,   // counts bad blocks, repairs nothing
  kRepair = 2,  // rewrites a bad copy from one that verifies
};
enum class ScrubResult : uint8_t {
  kNone = 0,    // no scrub ever completed
  kClean = 1,   // the last one found nothing
  kErrors = 2,  // the last one found bad blocks
};
inline constexpr uint8_t kScrubPaused = 1 << 0;

// A version 2 volume's scrub, so that it resumes (or stays paused) after a restart.
struct ScrubRecord {
  ScrubMode mode = ScrubMode::kNone;
  bool paused = false;
  uint64_t cursor = 0;  // volume blocks below it are scrubbed
  uint64_t errors = 0;  // bad copies of blocks the scrub under way found so far
  ScrubResult last_result = ScrubResult::kNone;
  uint64_t last_completed = 0;  // when the last scrub completed, seconds since the Unix epoch

  bool operator==(const ScrubRecord&) const = default;
};

struct Superblock {
  uint32_t version = kFormatVersion1;
  uint32_t flags = 0;  // kFlagEncrypted, kFlagTableTags; any other bit is refused
  uint64_t event = 0;
  uint64_t created = 0;  // seconds since the Unix epoch, UTC
  Uuid volume_uuid{};
  Uuid member_uuid{};
  std::string name;  // the volume's name, 1..64 bytes of UTF-8, no control characters
  uint32_t member_index = 0;
  uint32_t member_count = 0;
  volume::LayoutKind layout = volume::LayoutKind::kLinear;
  uint64_t chunk_size = 0;  // stripe only; 0 for linear
  VolumeState state = VolumeState::kClean;
  uint64_t volume_size = 0;  // the whole volume's size in bytes
  MemberGeometry geometry;   // member size, block/region size, algorithm, areas
  // kBlake2bKeyed: KeyIdentity() of the key, or for an encrypted volume the master key's
  // BlockCipher::Check(); zero otherwise.
  KeyId key_id{};
  std::array<MemberState, kMaxMembers> member_states{};  // indexed by member index

  // Version 2 only (mirror and raid10); version 1 keeps these defaults. A slot is a member index.
  uint32_t copies = 1;  // K, the copies of each byte: at least 2 in version 2
  Uuid generation{};    // new at every change of the current set; never zero in version 2
  std::array<Uuid, kHistoryLength> history{};  // previous generations, newest first; zero: none
  uint64_t map_epoch = 0;        // event at which the missed-write maps were last all clear
  uint64_t ownership_epoch = 0;  // bumped by every writable assembly; <= kMaxOwnershipEpoch
  Uuid owner_uuid{};             // the aggregator that last bumped it; zero: none yet
  std::array<uint8_t, kMaxMembers> slot_flags{};    // kSlotWriteMostly, kSlotWantReplacement
  std::array<uint64_t, kMaxMembers> stale_since{};  // event the slot stopped receiving writes
  std::array<uint64_t, kMaxMembers> cursor{};       // resync/rebuild progress in data blocks
  std::array<Uuid, kMaxMembers> slot_members{};     // the member UUID that owns each slot
  ScrubRecord scrub;

  // Encrypted volumes only (either version): the master key, wrapped (key_slot.h); at least one
  // slot in use. Zero otherwise.
  std::array<KeySlotBytes, kKeySlots> key_slots{};

  bool encrypted() const { return (flags & kFlagEncrypted) != 0; }
  bool table_tags() const { return (flags & kFlagTableTags) != 0; }
  bool operator==(const Superblock&) const = default;
};

// EINVAL naming the first field out of range (see the file comment); ENOTSUP for a version or
// flags this code does not know. docs/format.md §3.3 lists the checks.
Status ValidateSuperblock(const Superblock& sb);
Status Encode(const Superblock& sb, std::span<uint8_t, kSlotSize> out);
// `in` must be exactly one slot.
Status Decode(std::span<const uint8_t> in, Superblock* out);

// The slot an update with event counter `event` goes to.
inline constexpr uint32_t NextSlot(uint64_t event) {
  return static_cast<uint32_t>(event % 2);
}
inline constexpr uint64_t SlotOffset(uint32_t slot) {
  return slot * kSlotSize;
}

struct SlotChoice {
  uint32_t slot = 0;
  Superblock superblock;
};
// The valid slot with the higher event counter. A slot is valid when it decodes and its event
// counter belongs in it (NextSlot), which also catches a slot written to the wrong place. Both
// invalid: an error naming both reasons, ENOENT when neither has the magic. Either slot from a
// newer format (ENOTSUP) is an error even if the other is valid: falling back to the older copy
// would silently roll the volume back.
Status ChooseSlot(std::span<const uint8_t> slot0, std::span<const uint8_t> slot1, SlotChoice* out);

// The key slots in use, decoded, with their index: what inspect, `key list` and assembly show
// or try. Slots that do not decode are left out (a valid superblock has none).
std::vector<std::pair<uint32_t, KeySlot>> KeySlotsInUse(
    const std::array<KeySlotBytes, kKeySlots>& slots);

// Identifies a keyed-checksum key without revealing it: keyed BLAKE2b-256 of a fixed string, so it
// is as hard to invert as any table entry. EINVAL for a key Checksummer refuses.
Status KeyIdentity(std::span<const uint8_t> key, KeyId* out);

// On-disk codes of the layout kinds (LayoutKind itself has no fixed values).
uint8_t LayoutCode(volume::LayoutKind kind);
std::string_view VolumeStateName(VolumeState state);  // "clean", "dirty"
// How the volume's blocks are protected, for status and logs: the checksum algorithm's name, or
// "encrypted" (AES-256-XTS with blake2b-keyed MACs).
const char* ProtectionName(const Superblock& sb);
// For log lines: "blake2b-keyed", or "blake2b-keyed, encrypted (aes-256-xts)".
std::string ProtectionText(const Superblock& sb);
// "unused", "active", "failed", "missing", "stale", "rebuilding", "spare", "resyncing".
std::string_view MemberStateName(MemberState state);
std::string_view ScrubModeName(ScrubMode mode);        // "none", "check", "repair"
std::string_view ScrubResultName(ScrubResult result);  // "none", "clean", "errors"

}  // namespace dst::integrity
