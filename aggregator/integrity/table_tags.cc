#include "aggregator/integrity/table_tags.h"

#include <string.h>  // explicit_bzero
#include <algorithm>

#include <cstring>
#include <utility>

#include "common/block_cipher.h"
#include "common/nbd_protocol.h"

namespace dst::integrity {

using nbd::LoadBE64;
using nbd::StoreBE32;
using nbd::StoreBE64;

namespace {

constexpr std::string_view kTableKeyLabel = "dst table key";

bool AllZero(std::span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

void EncodeTagPage(const TagPage& page, std::span<uint8_t, kMetadataPageSize> out) {
  std::fill(out.begin(), out.end(), 0);
  for (size_t s = 0; s < kTagSlots; ++s) {
    uint8_t* p = out.data() + s * kTagSlotStride;
    StoreBE64(p + kTagSlotGeneration, page.slots[s].generation);
    std::copy(page.slots[s].tag.begin(), page.slots[s].tag.end(), p + kTagSlotTag);
  }
}

TagPage DecodeTagPage(std::span<const uint8_t, kMetadataPageSize> in) {
  TagPage page;
  for (size_t s = 0; s < kTagSlots; ++s) {
    const uint8_t* p = in.data() + s * kTagSlotStride;
    page.slots[s].generation = LoadBE64(p + kTagSlotGeneration);
    std::copy_n(p + kTagSlotTag, kTableTagSize, page.slots[s].tag.begin());
  }
  return page;
}

Status TableTagger::Create(std::span<const uint8_t> key, std::span<const uint8_t, 16> volume_uuid,
                           std::optional<TableTagger>* out) {
  Checksummer::Result derive = Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, key);
  DST_RETURN_IF_ERROR(derive.status);
  Digest tag_key = derive.checksummer->Compute(LabelBytes(kTableKeyLabel));
  Checksummer::Result mac =
      Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, {tag_key.bytes.data(), kTableTagSize});
  explicit_bzero(tag_key.bytes.data(), tag_key.bytes.size());
  DST_RETURN_IF_ERROR(mac.status);
  out->emplace(TableTagger(std::move(*mac.checksummer), volume_uuid));
  return Status::Ok();
}

TableTagger::TableTagger(Checksummer mac, std::span<const uint8_t, 16> volume_uuid)
    : mac_(std::move(mac)) {
  std::copy(volume_uuid.begin(), volume_uuid.end(), volume_uuid_.begin());
}

TableTag TableTagger::Tag(uint32_t table, uint64_t page, uint64_t generation,
                          std::span<const uint8_t, kMetadataPageSize> bytes) {
  uint8_t place[4 + 8 + 8];
  StoreBE32(place, table);
  StoreBE64(place + 4, page);
  StoreBE64(place + 12, generation);
  mac_.Reset();
  mac_.Update(volume_uuid_);
  mac_.Update(place);
  mac_.Update(bytes);
  const Digest digest = mac_.Final();
  TableTag tag;
  std::copy_n(digest.bytes.begin(), kTableTagSize, tag.begin());
  return tag;
}

std::optional<uint64_t> TableTagger::Verify(uint32_t table, uint64_t page,
                                            std::span<const uint8_t, kMetadataPageSize> bytes,
                                            const TagPage& tags) {
  std::optional<uint64_t> best;
  for (size_t s = 0; s < kTagSlots; ++s) {
    const TagSlot& slot = tags.slots[s];
    if (slot.generation == 0 || slot.generation % kTagSlots != s) continue;
    if (best && *best > slot.generation) continue;
    if (Tag(table, page, slot.generation, bytes) == slot.tag) best = slot.generation;
  }
  if (best) return best;
  if (AllZero(bytes) && tags == TagPage{}) return 0;
  return std::nullopt;
}

}  // namespace dst::integrity
