#include "aggregator/integrity/superblock.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

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
  if (sb.version != kFormatVersion) {
    return Status::Error(ENOTSUP, "superblock format version " + std::to_string(sb.version) +
                                      " is not supported (this dst reads version 1)");
  }
  if (sb.flags != 0) {
    return Status::Error(ENOTSUP, "superblock has unknown feature flags " +
                                      std::to_string(sb.flags) + " (version 1 defines none)");
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
  for (uint32_t i = 0; i < kMaxMembers; ++i) {
    const auto code = static_cast<uint8_t>(sb.member_states[i]);
    const bool used = i < sb.member_count;
    if (used ? (code < 1 || code > 3) : code != 0) {
      return Status::Invalid("member " + std::to_string(i) + " has invalid state " +
                             std::to_string(code));
    }
  }
  return Status::Ok();
}

Status ValidateVolume(const Superblock& sb) {
  const uint32_t block = sb.geometry.params.block_size;
  if (sb.layout == volume::LayoutKind::kStripe) {
    // A block must never straddle two chunks, i.e. two members.
    if (!std::has_single_bit(sb.chunk_size) || sb.chunk_size < block ||
        sb.chunk_size > volume::kMaxChunkSize) {
      return Status::Invalid("stripe chunk size " + FormatSize(sb.chunk_size) +
                             " is not a power of two from the block size to 1 GiB");
    }
  } else if (sb.layout != volume::LayoutKind::kLinear) {
    return Status::Invalid("unknown layout");
  } else if (sb.chunk_size != 0) {
    return Status::Invalid("linear volume has chunk size " + FormatSize(sb.chunk_size));
  }
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

Status CheckAlignment(const MemberGeometry& g) {
  const bool pages =
      g.bitmap.offset % kMetadataPageSize == 0 && g.bitmap.size % kMetadataPageSize == 0 &&
      g.table.offset % kMetadataPageSize == 0 && g.table.size % kMetadataPageSize == 0;
  if (!pages) return Status::Invalid("bitmap or table area is not aligned to 4 KiB pages");
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

Status ValidateGeometry(const MemberGeometry& g) {
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
  DST_RETURN_IF_ERROR(CheckAlignment(g));
  return CheckCoverage(g);
}

Status ValidateKeyId(const Superblock& sb) {
  const bool keyed = sb.geometry.params.algorithm == ChecksumAlgorithm::kBlake2bKeyed;
  const bool zero =
      std::all_of(sb.key_id.begin(), sb.key_id.end(), [](uint8_t b) { return b == 0; });
  if (keyed && zero) return Status::Invalid("keyed checksums but no key identity");
  if (!keyed && !zero) return Status::Invalid("key identity present but checksums are not keyed");
  return Status::Ok();
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
  return kind == volume::LayoutKind::kStripe ? kStripeCode : kLinearCode;
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
  }
  return "unknown";
}

Status ValidateSuperblock(const Superblock& sb) {
  DST_RETURN_IF_ERROR(ValidateHeader(sb));
  DST_RETURN_IF_ERROR(ValidateName(sb.name));
  DST_RETURN_IF_ERROR(ValidateMembers(sb));
  DST_RETURN_IF_ERROR(ValidateGeometry(sb.geometry));
  DST_RETURN_IF_ERROR(ValidateVolume(sb));
  return ValidateKeyId(sb);
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

Status KeyIdentity(std::span<const uint8_t> key, KeyId* out) {
  Checksummer::Result made = Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, key);
  DST_RETURN_IF_ERROR(made.status);
  const auto* message = reinterpret_cast<const uint8_t*>(kKeyIdentityMessage.data());
  const Digest digest = made.checksummer->Compute({message, kKeyIdentityMessage.size()});
  std::copy_n(digest.bytes.begin(), out->size(), out->begin());
  return Status::Ok();
}

}  // namespace dst::integrity
