#include "aggregator/integrity/superblock.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

#include "aggregator/volume/set_geometry.h"
#include "common/nbd_protocol.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

using nbd::LoadBE32;
using nbd::LoadBE64;
using nbd::StoreBE32;
using nbd::StoreBE64;

constexpr uint8_t kLinearCode = 1;
constexpr uint8_t kStripeCode = 2;
constexpr uint8_t kMirrorCode = 3;
constexpr uint8_t kRaid10Code = 4;
constexpr std::string_view kKeyIdentityMessage = "dst member format v1 key identity";

// ---------------------------------------------------------------------------
// Validation, shared by Encode and Decode.

// Well-formed UTF-8 (Unicode 15, table 3-7) without control characters, so the name can be shown
// and put in JSON as is.
bool IsPrintableUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    const size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (c < 0xc2 || c > 0xf4 || i + n > s.size()) return false;
    const uint8_t c1 = static_cast<uint8_t>(s[i + 1]);
    const uint8_t lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    const uint8_t hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    if (c1 < lo || c1 > hi) return false;
    for (size_t k = 2; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

Status ValidateHeader(const Superblock& sb) {
  if (sb.version != kFormatVersion1 && sb.version != kFormatVersion2) {
    return Status::Error(ENOTSUP, "superblock format version " + std::to_string(sb.version) +
                                      " is not supported (this dst reads versions 1 and 2)");
  }
  if ((sb.flags & ~kKnownFlags) != 0) {
    return Status::Error(ENOTSUP, "superblock has unknown feature flags " +
                                      std::to_string(sb.flags & ~kKnownFlags) +
                                      " (this dst knows " + std::to_string(kKnownFlags) + ")");
  }
  return Status::Ok();
}

Status ValidateName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return Status::Invalid("volume name must be 1 to 64 bytes, not " + std::to_string(name.size()));
  }
  if (!IsPrintableUtf8(name)) {
    return Status::Invalid("volume name is not printable UTF-8");
  }
  return Status::Ok();
}

Status ValidateMembers(const Superblock& sb) {
  if (sb.member_count == 0 || sb.member_count > kMaxMembers) {
    return Status::Invalid("member count " + std::to_string(sb.member_count) +
                           " is not from 1 to 64");
  }
  if (sb.member_index >= sb.member_count) {
    return Status::Invalid("member index " + std::to_string(sb.member_index) +
                           " is not below the member count " + std::to_string(sb.member_count));
  }
  const uint8_t max_state = sb.version == kFormatVersion1 ? kMaxMemberStateV1 : kMaxMemberStateV2;
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    const auto code = static_cast<uint8_t>(sb.member_states[i]);
    const bool used = i < sb.member_count;
    if (used ? (code < 1 || code > max_state) : code != 0) {
      return Status::Invalid("member " + std::to_string(i) + " has invalid state " +
                             std::to_string(code));
    }
  }
  return Status::Ok();
}

// Version 1 holds linear and stripe volumes, version 2 mirror and raid10 ones.
Status ValidateLayoutVersion(const Superblock& sb) {
  const std::string name(volume::LayoutKindName(sb.layout));
  if (name == "unknown") return Status::Invalid("unknown layout");
  const bool redundant = volume::IsRedundant(sb.layout);
  if (redundant && sb.version != kFormatVersion2) {
    return Status::Invalid("layout " + name + " needs format version 2, not " +
                           std::to_string(sb.version));
  }
  if (!redundant && sb.version != kFormatVersion1) {
    return Status::Invalid("layout " + name + " is written in format version 1, not " +
                           std::to_string(sb.version));
  }
  return Status::Ok();
}

Status ValidateChunk(const Superblock& sb) {
  const uint32_t block = sb.geometry.params.block_size;
  const std::string name(volume::LayoutKindName(sb.layout));
  const bool striped =
      sb.layout == volume::LayoutKind::kStripe || sb.layout == volume::LayoutKind::kRaid10;
  if (!striped) {
    if (sb.chunk_size == 0) return Status::Ok();
    return Status::Invalid(name + " volume has chunk size " + FormatSize(sb.chunk_size));
  }
  // A block must never straddle two chunks, i.e. two members (or sets).
  if (!std::has_single_bit(sb.chunk_size) || sb.chunk_size < block ||
      sb.chunk_size > volume::kMaxChunkSize) {
    return Status::Invalid(name + " chunk size " + FormatSize(sb.chunk_size) +
                           " is not a power of two from the block size to 1 GiB");
  }
  return Status::Ok();
}

Status ValidateVolume(const Superblock& sb) {
  const uint32_t block = sb.geometry.params.block_size;
  DST_RETURN_IF_ERROR(ValidateLayoutVersion(sb));
  DST_RETURN_IF_ERROR(ValidateChunk(sb));
  if (sb.state != VolumeState::kClean && sb.state != VolumeState::kDirty) {
    return Status::Invalid("unknown volume state " + std::to_string(static_cast<int>(sb.state)));
  }
  if (sb.volume_size == 0 || sb.volume_size > kMaxMemberSize || sb.volume_size % block != 0) {
    return Status::Invalid("volume size " + FormatSize(sb.volume_size) +
                           " is not a positive multiple of the block size below 2^63");
  }
  return Status::Ok();
}

std::string Describe(std::string_view name, const Area& a) {
  return std::string(name) + " area [" + std::to_string(a.offset) + ", +" + std::to_string(a.size) +
         ")";
}

Status CheckInside(std::string_view name, const Area& a, uint64_t member_size) {
  if (a.size > member_size || a.offset > member_size - a.size) {
    return Status::Invalid(Describe(name, a) + " extends beyond the member (" +
                           std::to_string(member_size) + " bytes)");
  }
  return Status::Ok();
}

Status CheckBefore(std::string_view a_name, const Area& a, std::string_view b_name, const Area& b) {
  if (a.end() <= b.offset) return Status::Ok();
  return Status::Invalid(Describe(a_name, a) + " overlaps or follows " + Describe(b_name, b));
}

bool PageAligned(const Area& a) {
  return a.offset % kMetadataPageSize == 0 && a.size % kMetadataPageSize == 0;
}

Status CheckAlignment(const MemberGeometry& g) {
  if (!PageAligned(g.bitmap) || !PageAligned(g.missed_writes) || !PageAligned(g.table)) {
    return Status::Invalid("bitmap, missed-write map or table area is not aligned to 4 KiB pages");
  }
  if (g.data.offset % kDataAlignment != 0) {
    return Status::Invalid(Describe("data", g.data) + " is not aligned to 1 MiB");
  }
  if (g.data.size == 0 || g.data.size % g.params.block_size != 0) {
    return Status::Invalid(Describe("data", g.data) + " is not a positive number of blocks");
  }
  return Status::Ok();
}

Status CheckCoverage(const MemberGeometry& g) {
  if (g.table.size / g.entry_size() < g.data_blocks()) {
    return Status::Invalid(Describe("table", g.table) + " has fewer entries than the " +
                           std::to_string(g.data_blocks()) + " data blocks");
  }
  if (g.bitmap.size < (g.regions() + 7) / 8) {
    return Status::Invalid(Describe("bitmap", g.bitmap) + " has fewer bits than the " +
                           std::to_string(g.regions()) + " regions");
  }
  return Status::Ok();
}

// Version 2's missed-write map: the bitmap's twin between the bitmap and the table. Version 1 has
// none.
Status CheckMissedWriteMap(const MemberGeometry& g, uint32_t version) {
  if (version == kFormatVersion1) {
    if (g.missed_writes == Area{}) return Status::Ok();
    return Status::Invalid("version 1 has no " + Describe("missed-write map", g.missed_writes));
  }
  DST_RETURN_IF_ERROR(CheckInside("missed-write map", g.missed_writes, g.member_size));
  DST_RETURN_IF_ERROR(CheckBefore("bitmap", g.bitmap, "missed-write map", g.missed_writes));
  DST_RETURN_IF_ERROR(CheckBefore("missed-write map", g.missed_writes, "table", g.table));
  if (g.missed_writes.size != g.bitmap.size) {
    return Status::Invalid(Describe("missed-write map", g.missed_writes) +
                           " is not the size of the " + Describe("bitmap", g.bitmap));
  }
  return Status::Ok();
}

// The table tag area: one page per table page, between the table and the data area. Without
// table tags, none.
Status CheckTableTags(const MemberGeometry& g) {
  if (!g.params.table_tags) {
    if (g.table_tags == Area{}) return Status::Ok();
    return Status::Invalid("no table tags, but a " + Describe("table tag area", g.table_tags));
  }
  if (!PageAligned(g.table_tags))
    return Status::Invalid(Describe("table tag area", g.table_tags) +
                           " is not aligned to 4 KiB pages");
  DST_RETURN_IF_ERROR(CheckInside("table tag area", g.table_tags, g.member_size));
  DST_RETURN_IF_ERROR(CheckBefore("table", g.table, "table tag area", g.table_tags));
  DST_RETURN_IF_ERROR(CheckBefore("table tag area", g.table_tags, "data", g.data));
  if (g.table_tags.size != g.table.size)
    return Status::Invalid(Describe("table tag area", g.table_tags) + " is not the size of the " +
                           Describe("table", g.table));
  return Status::Ok();
}

Status ValidateGeometry(const MemberGeometry& g, uint32_t version) {
  DST_RETURN_IF_ERROR(ValidateFormatParams(g.params));
  if (g.member_size > kMaxMemberSize) return Status::Invalid("member size is 2^63 or more");
  if (g.superblocks != Area{0, kSlotCount * kSlotSize}) {
    return Status::Invalid(Describe("superblock", g.superblocks) + " is not [0, +8192)");
  }
  DST_RETURN_IF_ERROR(CheckInside("bitmap", g.bitmap, g.member_size));
  DST_RETURN_IF_ERROR(CheckInside("table", g.table, g.member_size));
  DST_RETURN_IF_ERROR(CheckInside("data", g.data, g.member_size));
  DST_RETURN_IF_ERROR(CheckBefore("superblock", g.superblocks, "bitmap", g.bitmap));
  DST_RETURN_IF_ERROR(CheckBefore("bitmap", g.bitmap, "table", g.table));
  DST_RETURN_IF_ERROR(CheckBefore("table", g.table, "data", g.data));
  DST_RETURN_IF_ERROR(CheckMissedWriteMap(g, version));
  DST_RETURN_IF_ERROR(CheckTableTags(g));
  DST_RETURN_IF_ERROR(CheckAlignment(g));
  return CheckCoverage(g);
}

Status ValidateKeyId(const Superblock& sb) {
  const bool keyed = sb.geometry.params.algorithm == ChecksumAlgorithm::kBlake2bKeyed;
  const bool zero =
      std::all_of(sb.key_id.begin(), sb.key_id.end(), [](uint8_t b) { return b == 0; });
  if (keyed && zero) return Status::Invalid("keyed checksums but no key identity");
  if (!keyed && !zero) return Status::Invalid("key identity present but checksums are not keyed");
  if (sb.table_tags() != sb.geometry.params.table_tags)
    return Status::Invalid("the table tags flag and the geometry disagree");
  return Status::Ok();
}

// An encrypted volume authenticates with keyed MACs and holds at least one key slot that
// decodes; any other volume has no key slot bytes at all.
Status ValidateEncryption(const Superblock& sb) {
  const KeySlotBytes empty{};
  if (!sb.encrypted()) {
    for (const KeySlotBytes& bytes : sb.key_slots)
      if (bytes != empty)
        return Status::Invalid("key slots present but the volume is not encrypted");
    return Status::Ok();
  }
  if (sb.geometry.params.algorithm != ChecksumAlgorithm::kBlake2bKeyed)
    return Status::Invalid(
        std::string("an encrypted volume authenticates with blake2b-keyed, not ") +
        ChecksumAlgorithmName(sb.geometry.params.algorithm));
  size_t used = 0;
  for (size_t i = 0; i < kKeySlots; ++i) {
    KeySlot slot;
    DST_RETURN_IF_ERROR(
        DecodeKeySlot(sb.key_slots[i], &slot).Wrap("key slot " + std::to_string(i)));
    if (slot.kind != KeySlotKind::kEmpty) ++used;
  }
  if (used == 0) return Status::Invalid("an encrypted volume without a key slot");
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Version 2: copies, generations, ownership and the slots.

// Version 1 has none of these on disk, so a version 1 superblock must keep their defaults:
// otherwise what is written would not read back.
Status CheckNoVersion2Fields(const Superblock& sb) {
  const Superblock none;
  const bool clear = sb.copies == none.copies && sb.generation == none.generation &&
                     sb.history == none.history && sb.map_epoch == none.map_epoch &&
                     sb.ownership_epoch == none.ownership_epoch &&
                     sb.owner_uuid == none.owner_uuid && sb.slot_flags == none.slot_flags &&
                     sb.stale_since == none.stale_since && sb.cursor == none.cursor &&
                     sb.slot_members == none.slot_members && sb.scrub == none.scrub;
  if (clear) return Status::Ok();
  return Status::Invalid(
      "version 1 superblock has version 2 fields set (copies, generation, epochs, slots or "
      "scrub)");
}

// Newest first, zero for none: no gap, no repeat, never the generation itself.
Status ValidateGenerations(const Superblock& sb) {
  if (IsZero(sb.generation)) return Status::Invalid("generation UUID is zero");
  bool ended = false;
  for (size_t i = 0; i < kHistoryLength; ++i) {
    const Uuid& h = sb.history[i];
    const std::string name = "history entry " + std::to_string(i);
    if (IsZero(h)) {
      ended = true;
      continue;
    }
    if (ended) return Status::Invalid(name + " is set after an empty one");
    if (h == sb.generation) return Status::Invalid(name + " is the current generation");
    for (size_t j = 0; j < i; ++j)
      if (h == sb.history[j])
        return Status::Invalid(name + " repeats history entry " + std::to_string(j));
  }
  return Status::Ok();
}

Status ValidateEpochs(const Superblock& sb) {
  if (sb.ownership_epoch > kMaxOwnershipEpoch) {
    return Status::Invalid("ownership epoch " + std::to_string(sb.ownership_epoch) +
                           " is not below 2^31");
  }
  if (sb.map_epoch > sb.event) {
    return Status::Invalid("map epoch " + std::to_string(sb.map_epoch) +
                           " is after the superblock's event " + std::to_string(sb.event));
  }
  return Status::Ok();
}

// A slot in use: known flags, no stale-since while active, a cursor inside what each copy holds,
// and an owner.
Status ValidateSlot(const Superblock& sb, uint32_t slot, uint64_t copy_blocks) {
  const std::string name = "slot " + std::to_string(slot);
  if ((sb.slot_flags[slot] & ~kKnownSlotFlags) != 0) {
    return Status::Invalid(name + " has unknown flags " + std::to_string(sb.slot_flags[slot]));
  }
  if (sb.member_states[slot] == MemberState::kActive && sb.stale_since[slot] != 0) {
    return Status::Invalid(name + " is active but stale since event " +
                           std::to_string(sb.stale_since[slot]));
  }
  if (sb.cursor[slot] > copy_blocks) {
    return Status::Invalid(name + " cursor " + std::to_string(sb.cursor[slot]) + " is beyond the " +
                           std::to_string(copy_blocks) + " blocks each copy holds");
  }
  if (IsZero(sb.slot_members[slot])) return Status::Invalid(name + " has no member UUID");
  return Status::Ok();
}

Status ValidateUnusedSlot(const Superblock& sb, uint32_t slot) {
  if (sb.slot_flags[slot] == 0 && sb.stale_since[slot] == 0 && sb.cursor[slot] == 0 &&
      IsZero(sb.slot_members[slot])) {
    return Status::Ok();
  }
  return Status::Invalid("slot " + std::to_string(slot) +
                         " is past the member count but is not all zero");
}

// Each slot has its own owner, and this member owns its own slot.
Status ValidateSlotOwners(const Superblock& sb) {
  for (uint32_t i = 0; i < sb.member_count; ++i) {
    for (uint32_t j = i + 1; j < sb.member_count; ++j) {
      if (sb.slot_members[i] == sb.slot_members[j]) {
        return Status::Invalid("slots " + std::to_string(i) + " and " + std::to_string(j) +
                               " have the same member UUID");
      }
    }
  }
  if (sb.slot_members[sb.member_index] != sb.member_uuid) {
    return Status::Invalid("slot " + std::to_string(sb.member_index) +
                           " does not name this member's UUID");
  }
  return Status::Ok();
}

Status ValidateSlots(const Superblock& sb, const volume::SetGeometry& sets) {
  // Every copy holds the same share of the volume (set_geometry.h), in whole blocks.
  const uint64_t copy_blocks = sb.volume_size / sets.sets() / sb.geometry.params.block_size;
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    DST_RETURN_IF_ERROR(i < sb.member_count ? ValidateSlot(sb, i, copy_blocks)
                                            : ValidateUnusedSlot(sb, i));
  }
  return ValidateSlotOwners(sb);
}

// No scrub: nothing of one; a scrub: a cursor inside the volume. A completion time goes with a
// result.
Status ValidateScrub(const Superblock& sb) {
  const ScrubRecord& r = sb.scrub;
  if (static_cast<uint8_t>(r.mode) > static_cast<uint8_t>(ScrubMode::kRepair))
    return Status::Invalid("unknown scrub mode " + std::to_string(static_cast<int>(r.mode)));
  if (static_cast<uint8_t>(r.last_result) > static_cast<uint8_t>(ScrubResult::kErrors))
    return Status::Invalid("unknown scrub result " +
                           std::to_string(static_cast<int>(r.last_result)));
  if (r.mode == ScrubMode::kNone && (r.paused || r.cursor != 0 || r.errors != 0))
    return Status::Invalid("no scrub under way, but a scrub cursor, errors or pause are set");
  const uint64_t blocks = sb.volume_size / sb.geometry.params.block_size;
  if (r.cursor > blocks)
    return Status::Invalid("scrub cursor " + std::to_string(r.cursor) + " is beyond the " +
                           std::to_string(blocks) + " blocks of the volume");
  if ((r.last_result == ScrubResult::kNone) != (r.last_completed == 0))
    return Status::Invalid("scrub last result and last completion disagree");
  return Status::Ok();
}

Status ValidateRedundancy(const Superblock& sb) {
  if (sb.version == kFormatVersion1) return CheckNoVersion2Fields(sb);
  volume::SetGeometry sets;
  DST_RETURN_IF_ERROR(volume::MakeSetGeometry(sb.layout, sb.member_count, sb.copies, &sets));
  DST_RETURN_IF_ERROR(ValidateGenerations(sb));
  DST_RETURN_IF_ERROR(ValidateEpochs(sb));
  DST_RETURN_IF_ERROR(ValidateScrub(sb));
  return ValidateSlots(sb, sets);
}

// ---------------------------------------------------------------------------
// Byte encoding.

void PutArea(uint8_t* p, const Area& a) {
  StoreBE64(p, a.offset);
  StoreBE64(p + 8, a.size);
}

Area GetArea(const uint8_t* p) {
  return {LoadBE64(p), LoadBE64(p + 8)};
}

void PutUuid(uint8_t* p, const Uuid& uuid) {
  std::copy(uuid.begin(), uuid.end(), p);
}

Uuid GetUuid(const uint8_t* p) {
  Uuid uuid;
  std::copy_n(p, uuid.size(), uuid.begin());
  return uuid;
}

void EncodeVersion2Fields(const Superblock& sb, uint8_t* p) {
  namespace o = offsets;
  p[o::kCopies] = static_cast<uint8_t>(sb.copies);
  PutUuid(p + o::kGeneration, sb.generation);
  for (size_t i = 0; i < kHistoryLength; ++i)
    PutUuid(p + o::kHistory + 16 * i, sb.history[i]);
  StoreBE64(p + o::kMapEpoch, sb.map_epoch);
  StoreBE64(p + o::kOwnershipEpoch, sb.ownership_epoch);
  PutUuid(p + o::kOwnerUuid, sb.owner_uuid);
  PutArea(p + o::kMissedWrites, sb.geometry.missed_writes);
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    p[o::kSlotFlags + i] = sb.slot_flags[i];
    StoreBE64(p + o::kStaleSince + 8 * i, sb.stale_since[i]);
    StoreBE64(p + o::kCursor + 8 * i, sb.cursor[i]);
    PutUuid(p + o::kSlotMembers + 16 * i, sb.slot_members[i]);
  }
  p[o::kScrubMode] = static_cast<uint8_t>(sb.scrub.mode);
  p[o::kScrubFlags] = sb.scrub.paused ? kScrubPaused : 0;
  p[o::kScrubLastResult] = static_cast<uint8_t>(sb.scrub.last_result);
  StoreBE64(p + o::kScrubCursor, sb.scrub.cursor);
  StoreBE64(p + o::kScrubErrors, sb.scrub.errors);
  StoreBE64(p + o::kScrubLastCompleted, sb.scrub.last_completed);
}

void DecodeVersion2Fields(const uint8_t* p, Superblock* sb) {
  namespace o = offsets;
  sb->copies = p[o::kCopies];
  sb->generation = GetUuid(p + o::kGeneration);
  for (size_t i = 0; i < kHistoryLength; ++i)
    sb->history[i] = GetUuid(p + o::kHistory + 16 * i);
  sb->map_epoch = LoadBE64(p + o::kMapEpoch);
  sb->ownership_epoch = LoadBE64(p + o::kOwnershipEpoch);
  sb->owner_uuid = GetUuid(p + o::kOwnerUuid);
  sb->geometry.missed_writes = GetArea(p + o::kMissedWrites);
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    sb->slot_flags[i] = p[o::kSlotFlags + i];
    sb->stale_since[i] = LoadBE64(p + o::kStaleSince + 8 * i);
    sb->cursor[i] = LoadBE64(p + o::kCursor + 8 * i);
    sb->slot_members[i] = GetUuid(p + o::kSlotMembers + 16 * i);
  }
  sb->scrub.mode = static_cast<ScrubMode>(p[o::kScrubMode]);
  sb->scrub.paused = (p[o::kScrubFlags] & kScrubPaused) != 0;
  sb->scrub.last_result = static_cast<ScrubResult>(p[o::kScrubLastResult]);
  sb->scrub.cursor = LoadBE64(p + o::kScrubCursor);
  sb->scrub.errors = LoadBE64(p + o::kScrubErrors);
  sb->scrub.last_completed = LoadBE64(p + o::kScrubLastCompleted);
}

// Bits of the scrub flags this code does not know, refused like unknown superblock flags.
Status CheckScrubFlags(const uint8_t* p, uint32_t version) {
  if (version != kFormatVersion2 || (p[offsets::kScrubFlags] & ~kScrubPaused) == 0)
    return Status::Ok();
  return Status::Invalid("unknown scrub flags " + std::to_string(p[offsets::kScrubFlags]));
}

void EncodeFields(const Superblock& sb, uint8_t* p) {
  namespace o = offsets;
  const MemberGeometry& g = sb.geometry;
  std::memcpy(p + o::kMagic, kMagic, sizeof kMagic);
  StoreBE32(p + o::kVersion, sb.version);
  StoreBE32(p + o::kFlags, sb.flags);
  StoreBE64(p + o::kEvent, sb.event);
  StoreBE64(p + o::kCreated, sb.created);
  std::copy(sb.volume_uuid.begin(), sb.volume_uuid.end(), p + o::kVolumeUuid);
  std::copy(sb.member_uuid.begin(), sb.member_uuid.end(), p + o::kMemberUuid);
  std::memcpy(p + o::kName, sb.name.data(), sb.name.size());
  StoreBE32(p + o::kMemberIndex, sb.member_index);
  StoreBE32(p + o::kMemberCount, sb.member_count);
  p[o::kLayout] = LayoutCode(sb.layout);
  p[o::kAlgorithm] = static_cast<uint8_t>(g.params.algorithm);
  p[o::kState] = static_cast<uint8_t>(sb.state);
  StoreBE32(p + o::kBlockSize, g.params.block_size);
  StoreBE64(p + o::kChunkSize, sb.chunk_size);
  StoreBE64(p + o::kRegionSize, g.params.region_size);
  StoreBE64(p + o::kMemberSize, g.member_size);
  StoreBE64(p + o::kVolumeSize, sb.volume_size);
  PutArea(p + o::kSuperblocks, g.superblocks);
  PutArea(p + o::kBitmap, g.bitmap);
  PutArea(p + o::kTable, g.table);
  PutArea(p + o::kData, g.data);
  std::copy(sb.key_id.begin(), sb.key_id.end(), p + o::kKeyId);
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    p[o::kMemberStates + i] = static_cast<uint8_t>(sb.member_states[i]);
  }
  if (sb.version == kFormatVersion2) EncodeVersion2Fields(sb, p);
  if (sb.table_tags()) PutArea(p + o::kTableTags, g.table_tags);
  if (sb.encrypted())
    for (size_t i = 0; i < kKeySlots; ++i)
      std::copy(sb.key_slots[i].begin(), sb.key_slots[i].end(),
                p + o::kKeySlotArea + kKeySlotSize * i);
}

// The one-byte codes that must map onto enums; the rest is range-checked by ValidateSuperblock.
Status DecodeCodes(const uint8_t* p, Superblock* sb) {
  namespace o = offsets;
  switch (p[o::kLayout]) {
    case kLinearCode:
      sb->layout = volume::LayoutKind::kLinear;
      break;
    case kStripeCode:
      sb->layout = volume::LayoutKind::kStripe;
      break;
    case kMirrorCode:
      sb->layout = volume::LayoutKind::kMirror;
      break;
    case kRaid10Code:
      sb->layout = volume::LayoutKind::kRaid10;
      break;
    default:
      return Status::Invalid("unknown layout code " + std::to_string(p[o::kLayout]));
  }
  const auto algorithm = ChecksumAlgorithmFromCode(p[o::kAlgorithm]);
  if (!algorithm) {
    return Status::Invalid("unknown checksum algorithm code " + std::to_string(p[o::kAlgorithm]));
  }
  sb->geometry.params.algorithm = *algorithm;
  sb->state = static_cast<VolumeState>(p[o::kState]);
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    sb->member_states[i] = static_cast<MemberState>(p[o::kMemberStates + i]);
  }
  return Status::Ok();
}

void DecodeFields(const uint8_t* p, Superblock* sb) {
  namespace o = offsets;
  MemberGeometry& g = sb->geometry;
  sb->version = LoadBE32(p + o::kVersion);
  sb->flags = LoadBE32(p + o::kFlags);
  sb->event = LoadBE64(p + o::kEvent);
  sb->created = LoadBE64(p + o::kCreated);
  std::copy_n(p + o::kVolumeUuid, sb->volume_uuid.size(), sb->volume_uuid.begin());
  std::copy_n(p + o::kMemberUuid, sb->member_uuid.size(), sb->member_uuid.begin());
  const char* name = reinterpret_cast<const char*>(p + o::kName);
  sb->name.assign(name, strnlen(name, kMaxNameLength));
  sb->member_index = LoadBE32(p + o::kMemberIndex);
  sb->member_count = LoadBE32(p + o::kMemberCount);
  g.params.block_size = LoadBE32(p + o::kBlockSize);
  sb->chunk_size = LoadBE64(p + o::kChunkSize);
  g.params.region_size = LoadBE64(p + o::kRegionSize);
  g.member_size = LoadBE64(p + o::kMemberSize);
  sb->volume_size = LoadBE64(p + o::kVolumeSize);
  g.superblocks = GetArea(p + o::kSuperblocks);
  g.bitmap = GetArea(p + o::kBitmap);
  g.table = GetArea(p + o::kTable);
  g.data = GetArea(p + o::kData);
  std::copy_n(p + o::kKeyId, sb->key_id.size(), sb->key_id.begin());
  // Version 1 leaves the rest of the slot zero (table tags and key slots apart) and ignores it
  // on read.
  if (sb->version == kFormatVersion2) DecodeVersion2Fields(p, sb);
  g.params.table_tags = sb->table_tags();
  if (sb->table_tags()) g.table_tags = GetArea(p + o::kTableTags);
  if (sb->encrypted())
    for (size_t i = 0; i < kKeySlots; ++i)
      std::copy_n(p + o::kKeySlotArea + kKeySlotSize * i, kKeySlotSize, sb->key_slots[i].begin());
}

// CRC32C of the slot with the checksum field taken as zero.
uint32_t SlotChecksum(std::span<const uint8_t, kSlotSize> slot) {
  std::array<uint8_t, kSlotSize> copy;
  std::copy(slot.begin(), slot.end(), copy.begin());
  StoreBE32(copy.data() + offsets::kChecksum, 0);
  Checksummer crc = std::move(*Checksummer::Create(ChecksumAlgorithm::kCrc32c).checksummer);
  return LoadBE32(crc.Compute(copy).bytes.data());
}

// Bytes before the NUL padding must not contain a NUL, and the padding must be all NULs;
// otherwise the name read back would differ from the bytes written.
Status CheckNamePadding(const uint8_t* p, size_t name_size) {
  const uint8_t* pad = p + offsets::kName + name_size;
  const uint8_t* end = p + offsets::kName + kMaxNameLength;
  if (std::any_of(pad, end, [](uint8_t b) { return b != 0; })) {
    return Status::Invalid("volume name contains a NUL byte");
  }
  return Status::Ok();
}

Status DecodeChecked(std::span<const uint8_t, kSlotSize> in, Superblock* out) {
  if (!std::equal(kMagic, kMagic + sizeof kMagic, in.begin())) {
    return Status::Error(ENOENT, "no dst superblock (magic DSTMEMB1 not found)");
  }
  const uint32_t stored = LoadBE32(in.data() + offsets::kChecksum);
  if (stored != SlotChecksum(in)) {
    return Status::Error(EIO, "superblock checksum mismatch: torn or corrupted");
  }
  Superblock sb;
  DecodeFields(in.data(), &sb);
  DST_RETURN_IF_ERROR(ValidateHeader(sb));
  DST_RETURN_IF_ERROR(DecodeCodes(in.data(), &sb));
  DST_RETURN_IF_ERROR(CheckNamePadding(in.data(), sb.name.size()));
  DST_RETURN_IF_ERROR(CheckScrubFlags(in.data(), sb.version));
  DST_RETURN_IF_ERROR(ValidateSuperblock(sb));
  *out = std::move(sb);
  return Status::Ok();
}

Status DecodeSlot(std::span<const uint8_t> in, uint32_t slot, Superblock* out) {
  DST_RETURN_IF_ERROR(Decode(in, out));
  if (NextSlot(out->event) != slot) {
    return Status::Error(EIO, "superblock with event " + std::to_string(out->event) +
                                  " belongs in slot " + std::to_string(NextSlot(out->event)));
  }
  return Status::Ok();
}

Status BothInvalid(const Status& s0, const Status& s1) {
  int err = s0.err() != ENOENT ? s0.err() : s1.err();
  return Status::Error(
      err, "no valid superblock: slot 0: " + s0.message() + "; slot 1: " + s1.message());
}

}  // namespace

uint8_t LayoutCode(volume::LayoutKind kind) {
  switch (kind) {
    case volume::LayoutKind::kLinear:
      return kLinearCode;
    case volume::LayoutKind::kStripe:
      return kStripeCode;
    case volume::LayoutKind::kMirror:
      return kMirrorCode;
    case volume::LayoutKind::kRaid10:
      return kRaid10Code;
  }
  return 0;
}

const char* ProtectionName(const Superblock& sb) {
  return sb.encrypted() ? "encrypted" : ChecksumAlgorithmName(sb.geometry.params.algorithm);
}

std::string ProtectionText(const Superblock& sb) {
  return std::string(ChecksumAlgorithmName(sb.geometry.params.algorithm)) +
         (sb.encrypted() ? ", encrypted (aes-256-xts)" : "");
}

std::string_view VolumeStateName(VolumeState state) {
  switch (state) {
    case VolumeState::kClean:
      return "clean";
    case VolumeState::kDirty:
      return "dirty";
  }
  return "unknown";
}

std::string_view MemberStateName(MemberState state) {
  switch (state) {
    case MemberState::kUnused:
      return "unused";
    case MemberState::kActive:
      return "active";
    case MemberState::kFailed:
      return "failed";
    case MemberState::kMissing:
      return "missing";
    case MemberState::kStale:
      return "stale";
    case MemberState::kRebuilding:
      return "rebuilding";
    case MemberState::kSpare:
      return "spare";
    case MemberState::kResyncing:
      return "resyncing";
  }
  return "unknown";
}

std::string_view ScrubModeName(ScrubMode mode) {
  switch (mode) {
    case ScrubMode::kNone:
      return "none";
    case ScrubMode::kCheck:
      return "check";
    case ScrubMode::kRepair:
      return "repair";
  }
  return "unknown";
}

std::string_view ScrubResultName(ScrubResult result) {
  switch (result) {
    case ScrubResult::kNone:
      return "none";
    case ScrubResult::kClean:
      return "clean";
    case ScrubResult::kErrors:
      return "errors";
  }
  return "unknown";
}

Status ValidateSuperblock(const Superblock& sb) {
  DST_RETURN_IF_ERROR(ValidateHeader(sb));
  DST_RETURN_IF_ERROR(ValidateName(sb.name));
  DST_RETURN_IF_ERROR(ValidateMembers(sb));
  DST_RETURN_IF_ERROR(ValidateGeometry(sb.geometry, sb.version));
  DST_RETURN_IF_ERROR(ValidateVolume(sb));
  DST_RETURN_IF_ERROR(ValidateKeyId(sb));
  DST_RETURN_IF_ERROR(ValidateEncryption(sb));
  return ValidateRedundancy(sb);
}

Status Encode(const Superblock& sb, std::span<uint8_t, kSlotSize> out) {
  DST_RETURN_IF_ERROR(ValidateSuperblock(sb).Wrap("refusing to write superblock"));
  std::fill(out.begin(), out.end(), 0);
  EncodeFields(sb, out.data());
  StoreBE32(out.data() + offsets::kChecksum, SlotChecksum(out));
  return Status::Ok();
}

Status Decode(std::span<const uint8_t> in, Superblock* out) {
  if (in.size() != kSlotSize) {
    return Status::Invalid("superblock slot is " + std::to_string(in.size()) + " bytes, not 4096");
  }
  return DecodeChecked(in.first<kSlotSize>(), out);
}

Status ChooseSlot(std::span<const uint8_t> slot0, std::span<const uint8_t> slot1, SlotChoice* out) {
  SlotChoice c0{0, {}}, c1{1, {}};
  const Status s0 = DecodeSlot(slot0, 0, &c0.superblock);
  const Status s1 = DecodeSlot(slot1, 1, &c1.superblock);
  // A newer dst may have written the other slot: falling back to ours would roll the volume back.
  if (s0.err() == ENOTSUP) return s0.Wrap("slot 0");
  if (s1.err() == ENOTSUP) return s1.Wrap("slot 1");
  if (!s0.ok() && !s1.ok()) return BothInvalid(s0, s1);
  if (!s1.ok() || (s0.ok() && c0.superblock.event > c1.superblock.event)) {
    *out = std::move(c0);
  } else {
    *out = std::move(c1);
  }
  return Status::Ok();
}

std::vector<std::pair<uint32_t, KeySlot>> KeySlotsInUse(
    const std::array<KeySlotBytes, kKeySlots>& slots) {
  std::vector<std::pair<uint32_t, KeySlot>> used;
  for (uint32_t i = 0; i < kKeySlots; ++i) {
    KeySlot slot;
    if (DecodeKeySlot(slots[i], &slot).ok() && slot.kind != KeySlotKind::kEmpty)
      used.emplace_back(i, slot);
  }
  return used;
}

Status KeyIdentity(std::span<const uint8_t> key, KeyId* out) {
  Checksummer::Result made = Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, key);
  DST_RETURN_IF_ERROR(made.status);
  const auto* message = reinterpret_cast<const uint8_t*>(kKeyIdentityMessage.data());
  const Digest digest = made.checksummer->Compute({message, kKeyIdentityMessage.size()});
  std::copy_n(digest.bytes.begin(), out->size(), out->begin());
  return Status::Ok();
}

}  // namespace dst::integrity
