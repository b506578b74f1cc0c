#include "aggregator/integrity/member_format.h"

#include <bit>
#include <string>

#include "common/units.h"

namespace dst::integrity {

namespace {

uint64_t DivCeil(uint64_t a, uint64_t b) {
  return a / b + (a % b != 0);
}
// `alignment` is a power of two; callers keep `value` far enough below 2^64.
uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

Status ValidateBlockSize(uint32_t block_size) {
  if (std::has_single_bit(block_size) && block_size >= kMinBlockSize &&
      block_size <= kMaxBlockSize) {
    return Status::Ok();
  }
  return Status::Invalid("block size " + FormatSize(block_size) +
                         " is not a power of two from 512 B to 64 KiB");
}

Status ValidateRegionSize(uint64_t region_size, uint32_t block_size) {
  if (std::has_single_bit(region_size) && region_size >= block_size &&
      region_size <= kMaxRegionSize) {
    return Status::Ok();
  }
  return Status::Invalid("region size " + FormatSize(region_size) +
                         " is not a power of two from the block size (" + FormatSize(block_size) +
                         ") to 1 GiB");
}

// Bitmap and table sized for `capacity_blocks` data blocks, padded to whole pages.
uint64_t BitmapSize(uint64_t capacity_blocks, const FormatParams& params) {
  const uint64_t regions = DivCeil(capacity_blocks * params.block_size, params.region_size);
  return AlignUp(DivCeil(regions, 8), kMetadataPageSize);
}

uint64_t TableSize(uint64_t capacity_blocks, const FormatParams& params) {
  return AlignUp(capacity_blocks * ChecksumSize(params.algorithm), kMetadataPageSize);
}

// Places the metadata for the most data blocks the member could ever hold (as if it had no
// metadata at all). The real data area is smaller, so the tables always cover it; the price is a
// few unused table entries, and there is no circular dependency to iterate on.
// Version 2 puts the missed-write map, as large as the bitmap, between the bitmap and the table;
// table tags (either version) follow the table, as large as it.
void PlaceMetadata(uint64_t member_size, const FormatParams& params, uint32_t version,
                   MemberGeometry* g) {
  const uint64_t capacity_blocks = (member_size - kSlotCount * kSlotSize) / params.block_size;
  g->superblocks = {0, kSlotCount * kSlotSize};
  g->bitmap = {g->superblocks.end(), BitmapSize(capacity_blocks, params)};
  uint64_t next = g->bitmap.end();
  if (version == kFormatVersion2) {
    g->missed_writes = {next, g->bitmap.size};
    next = g->missed_writes.end();
  }
  g->table = {next, TableSize(capacity_blocks, params)};
  next = g->table.end();
  if (params.table_tags) {
    g->table_tags = {next, g->table.size};
    next = g->table_tags.end();
  }
  g->data.offset = AlignUp(next, kDataAlignment);
}

Status TooSmall(uint64_t member_size, const MemberGeometry& g) {
  // Exact for any member this small: its metadata fits before the first alignment boundary, so a
  // member one block past the data offset has the same data offset.
  return Status::Invalid("member of " + FormatSize(member_size) +
                         " is too small for the member format: it needs at least " +
                         FormatSize(g.data.offset + g.params.block_size) +
                         " (metadata, alignment and one " + FormatSize(g.params.block_size) +
                         " block)");
}

}  // namespace

Status ValidateFormatParams(const FormatParams& params) {
  DST_RETURN_IF_ERROR(ValidateBlockSize(params.block_size));
  DST_RETURN_IF_ERROR(ValidateRegionSize(params.region_size, params.block_size));
  if (ChecksumSize(params.algorithm) == 0) {
    return Status::Invalid("unknown checksum algorithm " +
                           std::to_string(static_cast<unsigned>(params.algorithm)));
  }
  // Tags are MACs: only a keyed volume has a key to make them with.
  if (params.table_tags && params.algorithm != ChecksumAlgorithm::kBlake2bKeyed)
    return Status::Invalid("table tags need the blake2b-keyed checksum");
  return Status::Ok();
}

bool SameAreas(const MemberGeometry& a, const MemberGeometry& b) {
  return a.params == b.params && a.superblocks == b.superblocks && a.bitmap == b.bitmap &&
         a.missed_writes == b.missed_writes && a.table == b.table && a.table_tags == b.table_tags &&
         a.data == b.data;
}

Status ComputeGeometry(uint64_t member_size, const FormatParams& params, MemberGeometry* out) {
  return ComputeGeometry(member_size, params, kFormatVersion1, out);
}

Status ComputeGeometry(uint64_t member_size, const FormatParams& params, uint32_t version,
                       MemberGeometry* out) {
  if (version != kFormatVersion1 && version != kFormatVersion2) {
    return Status::Invalid("unknown member format version " + std::to_string(version));
  }
  DST_RETURN_IF_ERROR(ValidateFormatParams(params));
  if (member_size > kMaxMemberSize) {
    return Status::Invalid("member of " + FormatSize(member_size) +
                           " is larger than 2^63 - 1 bytes");
  }
  MemberGeometry g;
  g.member_size = member_size;
  g.params = params;
  if (member_size < kSlotCount * kSlotSize) {
    PlaceMetadata(kSlotCount * kSlotSize, params, version, &g);
    return TooSmall(member_size, g);
  }
  PlaceMetadata(member_size, params, version, &g);
  const uint64_t room = member_size > g.data.offset ? member_size - g.data.offset : 0;
  g.data.size = room / params.block_size * params.block_size;
  if (g.data.size == 0) return TooSmall(member_size, g);
  *out = g;
  return Status::Ok();
}

TableEntryLocation LocateTableEntry(const MemberGeometry& geometry, uint64_t block) {
  const uint64_t offset = geometry.table.offset + block * geometry.entry_size();
  const uint64_t page = offset & ~(kMetadataPageSize - 1);
  return {offset, page, static_cast<uint32_t>(offset - page), geometry.entry_size()};
}

namespace {

BitmapBit LocateRegionBit(const Area& map, uint64_t region_size, uint64_t data_offset) {
  const uint64_t region = data_offset / region_size;
  const uint64_t offset = map.offset + region / 8;
  return {region, offset, offset & ~(kMetadataPageSize - 1),
          static_cast<uint8_t>(1u << (region % 8))};
}

}  // namespace

BitmapBit LocateBitmapBit(const MemberGeometry& geometry, uint64_t data_offset) {
  return LocateRegionBit(geometry.bitmap, geometry.params.region_size, data_offset);
}

BitmapBit LocateMissedWriteBit(const MemberGeometry& geometry, uint64_t data_offset) {
  return LocateRegionBit(geometry.missed_writes, geometry.params.region_size, data_offset);
}

}  // namespace dst::integrity
