// Table tags (docs/format.md §9): the tag page's bytes, the tag of a page at its place and
// generation, which slot verifies, and the superblock fields that announce them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/table_tags.h"
#include "aggregator/integrity/test_superblock.h"
#include "common/nbd_protocol.h"

namespace dst::integrity::table_tags_test {
namespace {

using nbd::StoreBE64;

using testing::MustDecode;
using testing::MustEncode;
using testing::Slot;
using testing::TestMember;
using testing::TestRedundantMember;

using Page = std::array<uint8_t, kMetadataPageSize>;

std::string Hex(std::span<const uint8_t> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// Key bytes 00..3f, volume UUID a0..af: the inputs of docs/format.md's fixed vectors.
TableTagger FixedTagger() {
  std::vector<uint8_t> key;
  for (uint8_t i = 0; i < 64; ++i)
    key.push_back(i);
  std::array<uint8_t, 16> uuid;
  for (uint8_t i = 0; i < 16; ++i)
    uuid[i] = static_cast<uint8_t>(0xa0 + i);
  std::optional<TableTagger> tagger;
  REQUIRE(TableTagger::Create(key, uuid, &tagger).ok());
  return std::move(*tagger);
}

Page PatternPage() {
  Page page;
  for (size_t i = 0; i < page.size(); ++i)
    page[i] = static_cast<uint8_t>(i * 5 + 1);
  return page;
}

// A page tagged at generation `generation` into its slot, as a write-back leaves it.
TagPage Tagged(TableTagger& tagger, const Page& page, uint64_t generation, TagPage tags = {}) {
  tags.slots[generation % kTagSlots] = {generation, tagger.Tag(1, 2, generation, page)};
  return tags;
}

TEST_CASE("table tags: the fixed vector (made with another implementation)") {
  TableTagger tagger = FixedTagger();
  CHECK(Hex(tagger.Tag(1, 2, 3, PatternPage())) ==
        "3f5189bea6a99043ae9cdbf2d43b3a5dcc836df21c710e6230f2851ce7b5240a");
}

TEST_CASE("table tags: a tag page's bytes") {
  TagPage tags;
  tags.slots[0] = {2, {}};
  tags.slots[1] = {0x0102030405060708, {}};
  tags.slots[1].tag.fill(0xee);
  Page bytes;
  EncodeTagPage(tags, bytes);
  CHECK(Hex({bytes.data(), 8}) == "0000000000000002");
  CHECK(Hex({bytes.data() + kTagSlotStride, 8}) == "0102030405060708");
  CHECK(std::all_of(bytes.begin() + kTagSlotStride + 8, bytes.begin() + kTagSlotStride + 40,
                    [](uint8_t b) { return b == 0xee; }));
  CHECK(std::count(bytes.begin(), bytes.end(), 0) == 4096 - 1 - 8 - 32);
  CHECK(DecodeTagPage(bytes) == tags);
}

TEST_CASE("table tags: what verifies") {
  TableTagger tagger = FixedTagger();
  const Page page = PatternPage();
  const Page zero{};
  SUBCASE("a page never written: page and tags all zero, generation 0") {
    CHECK(tagger.Verify(1, 2, zero, TagPage{}) == std::optional<uint64_t>(0));
  }
  SUBCASE("a written page, the newest verifying slot wins") {
    const TagPage one = Tagged(tagger, page, 1);
    CHECK(tagger.Verify(1, 2, page, one) == std::optional<uint64_t>(1));
    Page changed = page;
    changed[100] ^= 1;
    const TagPage two = Tagged(tagger, changed, 2, one);
    CHECK(tagger.Verify(1, 2, changed, two) == std::optional<uint64_t>(2));
    // The write of the tag page landed, the page's did not: the old page keeps its slot.
    CHECK(tagger.Verify(1, 2, page, two) == std::optional<uint64_t>(1));
  }
  SUBCASE("a zeroed entry, a zeroed page, a page without its tags") {
    const TagPage tags = Tagged(tagger, page, 1);
    Page zeroed_entry = page;
    std::fill_n(zeroed_entry.begin() + 64, 32, 0);
    CHECK_FALSE(tagger.Verify(1, 2, zeroed_entry, tags));
    CHECK_FALSE(tagger.Verify(1, 2, zero, tags));
    CHECK_FALSE(tagger.Verify(1, 2, page, TagPage{}));
  }
  SUBCASE("the tag binds the page's place and generation") {
    const TagPage tags = Tagged(tagger, page, 1);
    CHECK_FALSE(tagger.Verify(0, 2, page, tags));  // another member or set
    CHECK_FALSE(tagger.Verify(1, 3, page, tags));  // another page
    TagPage moved;
    moved.slots[1] = {3, tags.slots[1].tag};  // another generation
    CHECK_FALSE(tagger.Verify(1, 2, page, moved));
    TagPage wrong_slot;
    wrong_slot.slots[0] = tags.slots[1];  // generation 1 belongs in slot 1
    CHECK_FALSE(tagger.Verify(1, 2, page, wrong_slot));
  }
  SUBCASE("another key or volume") {
    std::optional<TableTagger> other;
    std::array<uint8_t, 16> uuid{};
    uuid[0] = 1;
    REQUIRE(TableTagger::Create(std::vector<uint8_t>(32, 7), uuid, &other).ok());
    CHECK_FALSE(other->Verify(1, 2, page, Tagged(tagger, page, 1)));
  }
}

// `sb` keyed with table tags, as create makes a keyed volume.
Superblock WithTableTags(Superblock sb) {
  sb.flags |= kFlagTableTags;
  FormatParams params = sb.geometry.params;
  params.algorithm = ChecksumAlgorithm::kBlake2bKeyed;
  params.table_tags = true;
  REQUIRE(ComputeGeometry(testing::kTestMemberSize, params, sb.version, &sb.geometry).ok());
  const uint64_t members = sb.version == kFormatVersion2 ? 1 : sb.member_count;
  sb.volume_size = members * sb.geometry.data.size;
  sb.key_id.fill(0x11);
  return sb;
}

TEST_CASE("table tags: the geometry and the superblock fields, in both versions") {
  for (const Superblock& plain : {TestMember(0, 2), TestRedundantMember(1, 2, 2)}) {
    CAPTURE(plain.version);
    const Superblock sb = WithTableTags(plain);
    const MemberGeometry& g = sb.geometry;
    CHECK(g.table_tags.offset == g.table.end());
    CHECK(g.table_tags.size == g.table.size);
    CHECK(g.data.offset >= g.table_tags.end());
    const Slot bytes = MustEncode(sb);
    CHECK(MustDecode(bytes) == sb);
    CHECK(bytes[offsets::kFlags + 3] == 2);  // big-endian kFlagTableTags
    std::array<uint8_t, 16> area{};
    StoreBE64(area.data(), g.table_tags.offset);
    StoreBE64(area.data() + 8, g.table_tags.size);
    CHECK(testing::At(bytes, offsets::kTableTags, 16) ==
          std::vector<uint8_t>(area.begin(), area.end()));
  }
}

TEST_CASE("table tags: the superblock's refusals") {
  auto refused = [](const Superblock& sb, const char* text) {
    const Status s = ValidateSuperblock(sb);
    CHECK(s.err() == EINVAL);
    CHECK_MESSAGE(s.message().find(text) != std::string::npos, s.message());
  };
  const Superblock good = WithTableTags(TestMember(0, 1));
  SUBCASE("tags need a keyed checksum") {
    Superblock sb = good;
    sb.geometry.params.algorithm = ChecksumAlgorithm::kBlake2b;
    sb.key_id = {};
    refused(sb, "table tags need the blake2b-keyed checksum");
  }
  SUBCASE("the flag without the area") {
    Superblock sb = good;
    sb.geometry.params.table_tags = false;
    sb.geometry.table_tags = {};
    refused(sb, "the table tags flag and the geometry disagree");
  }
  SUBCASE("an area smaller than the table") {
    Superblock sb = good;
    sb.geometry.table_tags.size -= kMetadataPageSize;
    refused(sb, "is not the size of the table");
  }
  SUBCASE("an area overlapping the table") {
    Superblock sb = good;
    sb.geometry.table_tags.offset -= kMetadataPageSize;
    refused(sb, "overlaps or follows");
  }
}

}  // namespace
}  // namespace dst::integrity::table_tags_test
