// Member format, geometry: where the superblock slots, the write-intent bitmap, the missed-write
// map (version 2), the checksum table and the data area lie on one member, computed from the
// member's size, the format parameters and the format version. Pure arithmetic: no I/O.
// docs/format.md is the specification; keep the two in step.
//
//   version 1: [slot 0 | slot 1 | bitmap | table | (padding) | data area | (tail < one block)]
//   (with table tags, the tag area follows the table: [... | table | table tags | (padding) | ...])
//   version 2: [slot 0 | slot 1 | bitmap | missed-write map | table | (padding) | data area | ...]
//               0        4 KiB    8 KiB                                  1 MiB-aligned
//
// Contract: ComputeGeometry validates everything and either fills a MemberGeometry whose areas lie
// in order inside the member without overlapping, or returns EINVAL naming the bad value. The
// location helpers never fail: callers pass a block or offset inside the data area (as Layout's
// callers validate requests), and get an unspecified location otherwise.
//
// Threading: plain values and pure functions; safe from any thread.
#pragma once

#include <cstdint>

#include "common/checksum.h"
#include "common/status.h"

namespace dst::integrity {

// Format versions. Version 1 is for linear and stripe volumes. Version 2, for mirror and raid10
// volumes, adds the missed-write map area and the superblock fields that track copies.
inline constexpr uint32_t kFormatVersion1 = 1;
inline constexpr uint32_t kFormatVersion2 = 2;

inline constexpr uint64_t kSlotSize = 4096;  // one superblock copy
inline constexpr uint64_t kSlotCount = 2;
inline constexpr uint64_t kMetadataPageSize = 4096;  // bitmap and table are padded to pages
// The data area starts on a 1 MiB boundary so that a stripe chunk (64 KiB by default, any power of
// two up to 1 MiB) maps to an equally aligned range of the member's disk: one chunk-sized request
// never straddles two of the backing device's stripes, pages or erase blocks.
inline constexpr uint64_t kDataAlignment = uint64_t{1} << 20;

inline constexpr uint32_t kMinBlockSize = 512;  // the smallest NBD block
inline constexpr uint32_t kMaxBlockSize = 64 * 1024;
inline constexpr uint32_t kDefaultBlockSize = 4096;
// Regions above 1 GiB would make one write dirty so much that recovery rereads most of a member.
inline constexpr uint64_t kMaxRegionSize = uint64_t{1} << 30;
inline constexpr uint64_t kDefaultRegionSize = uint64_t{4} << 20;
// NBD sizes are signed 64-bit in most implementations.
inline constexpr uint64_t kMaxMemberSize = (uint64_t{1} << 63) - 1;

// What the creator of a volume chooses; the same for every member of a volume.
struct FormatParams {
  uint32_t block_size = kDefaultBlockSize;    // power of two in [512, 64 KiB]
  uint64_t region_size = kDefaultRegionSize;  // power of two, >= block_size, <= 1 GiB
  ChecksumAlgorithm algorithm = ChecksumAlgorithm::kCrc32c;
  // Keyed algorithm only: a table tag area after the table, one tag page per table page, so that
  // the table itself is authenticated (docs/format.md §9). Volumes created before it have none.
  bool table_tags = false;

  bool operator==(const FormatParams&) const = default;
};

// A byte range of the member.
struct Area {
  uint64_t offset = 0;
  uint64_t size = 0;

  uint64_t end() const { return offset + size; }
  bool operator==(const Area&) const = default;
};

struct MemberGeometry {
  uint64_t member_size = 0;  // bytes of the member when it was formatted
  FormatParams params;
  Area superblocks;  // both slots: {0, 8 KiB}
  Area bitmap;       // 1 bit per region of the data area, padded to a page
  // Version 2: 1 bit per region as the bitmap, the same size, right after it. {0, 0} in version 1.
  Area missed_writes;
  Area table;  // one entry per data block, padded to a page
  // With params.table_tags: one tag page per table page, right after the table, as large as it.
  // {0, 0} otherwise.
  Area table_tags;
  Area data;  // whole blocks, offset aligned to kDataAlignment

  uint32_t entry_size() const { return static_cast<uint32_t>(ChecksumSize(params.algorithm)); }
  uint64_t data_blocks() const { return data.size / params.block_size; }
  uint64_t regions() const { return (data.size + params.region_size - 1) / params.region_size; }
  bool operator==(const MemberGeometry&) const = default;
};

// Whether two members keep their metadata and data at the same places (their sizes may differ):
// a copy that returns or joins a set must be laid out like the others.
bool SameAreas(const MemberGeometry& a, const MemberGeometry& b);

// EINVAL with a message naming the first bad parameter.
Status ValidateFormatParams(const FormatParams& params);

// Lays out a member of `member_size` bytes. EINVAL when the parameters are invalid, the size is
// above kMaxMemberSize, or the member cannot hold one data block after its metadata (the message
// gives the smallest size that can).
// `version` is kFormatVersion1 or kFormatVersion2 (EINVAL otherwise); the three-argument form is
// version 1.
Status ComputeGeometry(uint64_t member_size, const FormatParams& params, uint32_t version,
                       MemberGeometry* out);
Status ComputeGeometry(uint64_t member_size, const FormatParams& params, MemberGeometry* out);

// Where the checksum table entry of data block `block` (0-based within this member's data area)
// lives. Entries never straddle a page: both entry sizes divide kMetadataPageSize.
struct TableEntryLocation {
  uint64_t member_offset;   // first byte of the entry
  uint64_t page_offset;     // member offset of the kMetadataPageSize page holding it
  uint32_t offset_in_page;  // member_offset - page_offset
  uint32_t size;            // entry_size()
};
TableEntryLocation LocateTableEntry(const MemberGeometry& geometry, uint64_t block);

// The write-intent bit covering byte `data_offset` of the data area (an offset within the area,
// not a member offset). Bits are little-endian within a byte: region r is bit (r % 8) of byte r
// / 8.
struct BitmapBit {
  uint64_t region;         // data_offset / region_size
  uint64_t member_offset;  // the byte holding the bit
  uint64_t page_offset;    // member offset of the kMetadataPageSize page holding that byte
  uint8_t mask;            // 1 << (region % 8)
};
BitmapBit LocateBitmapBit(const MemberGeometry& geometry, uint64_t data_offset);
// The missed-write bit of the same region, numbered as the bitmap's (version 2 only).
BitmapBit LocateMissedWriteBit(const MemberGeometry& geometry, uint64_t data_offset);

}  // namespace dst::integrity
