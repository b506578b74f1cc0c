// Member format, table tags: the authentication of a keyed volume's checksum table itself
// (docs/format.md §9). Every 4 KiB table page has a 4 KiB tag page in the table tag area, holding
// two slots {generation, tag}; the tag is a keyed BLAKE2b MAC over the volume, the table (member,
// or set of copies), the page number, the generation and the page's bytes. A table entry that an
// export host zeroes, changes or moves then fails its page's tag, where it used to read as a hole
// or an older block.
//
// Write protocol (the caller, TableCache, does the I/O): generation g + 1 of a page is tagged into
// slot (g + 1) mod 2 and its tag page written before the table page; the slot of generation g
// stays as it was. A crash between the two writes leaves the old page with its old slot, or the
// new page with its new one: either verifies.
//
// Contract: Verify() accepts a page only with a slot whose tag is the MAC of exactly these bytes
// at exactly this place, or a page and tag page that are both all zero (generation 0: never
// written since create). Which generation is current is not its business: a whole page put back
// with its older tag page verifies here, and TableAnchor (table_anchor.h) is what tells.
//
// Threading: a TableTagger is used from one thread at a time; the rest are plain values.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>

#include "aggregator/integrity/member_format.h"
#include "common/checksum.h"
#include "common/status.h"

namespace dst::integrity {

inline constexpr size_t kTableTagSize = 32;
inline constexpr size_t kTagSlots = 2;
// Slot s of a tag page starts at s * kTagSlotStride: the slots lie in different sectors, and a
// tag page write rewrites the slot it keeps with the same bytes.
inline constexpr size_t kTagSlotStride = 2048;
// Inside a slot: the generation (u64, big-endian; 0 = empty), then the tag.
inline constexpr size_t kTagSlotGeneration = 0;
inline constexpr size_t kTagSlotTag = 8;

using TableTag = std::array<uint8_t, kTableTagSize>;

struct TagSlot {
  uint64_t generation = 0;  // 0: empty
  TableTag tag{};
  bool operator==(const TagSlot&) const = default;
};

// The two slots of one tag page; slot g % 2 holds generation g.
struct TagPage {
  std::array<TagSlot, kTagSlots> slots;
  bool operator==(const TagPage&) const = default;
};

// The 4096 bytes of a tag page: the slots at their offsets, zero elsewhere.
void EncodeTagPage(const TagPage& page, std::span<uint8_t, kMetadataPageSize> out);
TagPage DecodeTagPage(std::span<const uint8_t, kMetadataPageSize> in);

// The tag page of table page `page` lies at table_tags.offset + page * kMetadataPageSize.
inline uint64_t TagPageOffset(const MemberGeometry& geometry, uint64_t page) {
  return geometry.table_tags.offset + page * kMetadataPageSize;
}

class TableTagger {
 public:
  // `key` is the volume's key: the checksum key of a keyed volume, the master key of an encrypted
  // one. The tag key is derived from it (BLAKE2b-256 keyed with it over "dst table key"). EINVAL
  // for a key Checksummer refuses.
  static Status Create(std::span<const uint8_t> key, std::span<const uint8_t, 16> volume_uuid,
                       std::optional<TableTagger>* out);

  // BLAKE2b-256(key = tag key, volume UUID || table u32 || page u64 || generation u64 || bytes),
  // integers big-endian. `table` is the member index of a linear or stripe volume, the set index
  // of a mirror or raid10 (whose copies hold the same table).
  TableTag Tag(uint32_t table, uint64_t page, uint64_t generation,
               std::span<const uint8_t, kMetadataPageSize> bytes);
  // The generation of the verifying slot with the highest generation (a slot verifies when its
  // generation is not 0, belongs in it, and its tag is that of `bytes`); 0 when `bytes` and
  // `tags` are both all zero; nullopt when nothing verifies.
  std::optional<uint64_t> Verify(uint32_t table, uint64_t page,
                                 std::span<const uint8_t, kMetadataPageSize> bytes,
                                 const TagPage& tags);

 private:
  TableTagger(Checksummer mac, std::span<const uint8_t, 16> volume_uuid);

  Checksummer mac_;
  std::array<uint8_t, 16> volume_uuid_{};
};

}  // namespace dst::integrity
