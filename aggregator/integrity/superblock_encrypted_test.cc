// The encrypted-volume fields of the superblock (docs/format.md §8.2): the feature flag, the key
// check in the key identity field, and the key slots at offset 3072, in versions 1 and 2.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/test_superblock.h"
#include "common/block_cipher.h"
#include "common/key_slot.h"

namespace dst::integrity::superblock_encrypted_test {
namespace {

using testing::MustDecode;
using testing::MustEncode;
using testing::Reseal;
using testing::Slot;
using testing::TestMember;
using testing::TestRedundantMember;

// `sb` made encrypted as `create --encrypt` makes it: master key bytes 0..63, slot `index`
// opened by the key file bytes 0x5a × 32.
Superblock Encrypted(Superblock sb, uint32_t index = 0) {
  sb.flags = kFlagEncrypted;
  // Keyed entries are 32 bytes: the table grows, the data area may shrink.
  FormatParams params = sb.geometry.params;
  params.algorithm = ChecksumAlgorithm::kBlake2bKeyed;
  REQUIRE(ComputeGeometry(testing::kTestMemberSize, params, sb.version, &sb.geometry).ok());
  const uint64_t members = sb.version == kFormatVersion2 ? 1 : sb.member_count;
  sb.volume_size = members * sb.geometry.data.size;
  std::vector<uint8_t> master;
  for (uint8_t i = 0; i < kMasterKeySize; ++i)
    master.push_back(i);
  std::unique_ptr<BlockCipher> cipher;
  REQUIRE(BlockCipher::Create(master, &cipher).ok());
  sb.key_id = cipher->Check(std::span<const uint8_t, 16>(sb.volume_uuid));
  KeySlot slot;
  const std::vector<uint8_t> secret(32, 0x5a);
  REQUIRE(SealKeySlot(KeySlotKind::kKeyFile, secret, master,
                      std::span<const uint8_t, 16>(sb.volume_uuid), index, {0, 0, 0}, &slot)
              .ok());
  EncodeKeySlot(slot, sb.key_slots[index]);
  return sb;
}

TEST_CASE("superblock: encrypted fields survive Encode and Decode, in both versions") {
  for (const Superblock& plain : {TestMember(0, 2), TestRedundantMember(1, 2, 2)}) {
    CAPTURE(plain.version);
    const Superblock sb = Encrypted(plain, 3);
    const Slot bytes = MustEncode(sb);
    CHECK(MustDecode(bytes) == sb);
    CHECK(bytes[offsets::kFlags + 3] == 1);  // big-endian kFlagEncrypted
    CHECK(std::equal(sb.key_id.begin(), sb.key_id.end(), bytes.begin() + offsets::kKeyId));
    const size_t slot3 = offsets::kKeySlotArea + 3 * kKeySlotSize;
    CHECK(std::equal(sb.key_slots[3].begin(), sb.key_slots[3].end(), bytes.begin() + slot3));
    CHECK(bytes[slot3] == static_cast<uint8_t>(KeySlotKind::kKeyFile));
    // The other slots are zero on disk: empty.
    CHECK(std::all_of(bytes.begin() + offsets::kKeySlotArea, bytes.begin() + slot3,
                      [](uint8_t b) { return b == 0; }));
  }
}

TEST_CASE("superblock: encryption's refusals") {
  auto refused = [](const Superblock& sb, const char* text) {
    const Status s = ValidateSuperblock(sb);
    CHECK(s.err() == EINVAL);
    CHECK_MESSAGE(s.message().find(text) != std::string::npos, s.message());
  };
  const Superblock good = Encrypted(TestMember(0, 1));
  SUBCASE("an encrypted volume authenticates with keyed MACs") {
    Superblock sb = good;
    sb.geometry.params.algorithm = ChecksumAlgorithm::kCrc32c;
    sb.key_id = {};
    refused(sb, "authenticates with blake2b-keyed, not crc32c");
  }
  SUBCASE("without a key slot") {
    Superblock sb = good;
    sb.key_slots = {};
    refused(sb, "without a key slot");
  }
  SUBCASE("key slots in a volume that is not encrypted") {
    Superblock sb = good;
    sb.flags = 0;
    refused(sb, "key slots present but the volume is not encrypted");
  }
  SUBCASE("a key slot that does not decode") {
    Superblock sb = good;
    sb.key_slots[5][0] = 9;  // unknown kind
    refused(sb, "key slot 5");
  }
  SUBCASE("an unknown flag is not supported, whatever else is set") {
    Slot bytes = MustEncode(good);
    bytes[offsets::kFlags + 3] = 5;
    Reseal(bytes);
    Superblock sb;
    const Status s = Decode(bytes, &sb);
    CHECK(s.err() == ENOTSUP);
    CHECK(s.message().find("unknown feature flags 4") != std::string::npos);
  }
}

}  // namespace
}  // namespace dst::integrity::superblock_encrypted_test
