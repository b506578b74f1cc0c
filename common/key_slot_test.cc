// Key slots (common/key_slot.h): slots sealed here open with their secret only, not moved to
// another volume or index, not tampered with; and two fixed slots made by another implementation
// (the format of docs/format.md, "Key slots") open to the master key they hold.
#include "common/key_slot.h"

#include <cerrno>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "common/test_hex.h"

namespace dst::key_slot_test {
namespace {

using testing::FromHex;

std::vector<uint8_t> Text(const std::string& text) {
  return {text.begin(), text.end()};
}

// Cheap scrypt for tests: 2^10 * 8 * 128 = 1 MiB.
constexpr ScryptParams kCheap{.log2_n = 10, .r = 8, .p = 1};

struct Volume {
  std::array<uint8_t, 16> uuid{};
  std::vector<uint8_t> master;
  Volume() {
    for (size_t i = 0; i < uuid.size(); ++i)
      uuid[i] = static_cast<uint8_t>(0xa0 + i);
    for (size_t i = 0; i < kMasterKeySize; ++i)
      master.push_back(static_cast<uint8_t>(i));
  }
};

KeySlot Decoded(const std::string& hex) {
  const std::vector<uint8_t> bytes = FromHex(hex);
  REQUIRE(bytes.size() == kKeySlotSize);
  KeySlot slot;
  const Status s =
      DecodeKeySlot(std::span<const uint8_t, kKeySlotSize>(bytes.data(), kKeySlotSize), &slot);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return slot;
}

bool Opens(const KeySlot& slot, const std::vector<uint8_t>& secret, const Volume& v,
           uint32_t index) {
  CryptoPP::SecByteBlock master;
  const Status s = OpenKeySlot(slot, secret, v.uuid, index, &master);
  if (!s.ok()) {
    CHECK(s.err() == EACCES);
    CHECK(s.message() == "the key does not open key slot " + std::to_string(index));
    return false;
  }
  CHECK(std::vector<uint8_t>(master.begin(), master.end()) == v.master);
  return true;
}

TEST_CASE("key slot: fixed slots made elsewhere open to their master key") {
  const Volume v;
  // Passphrase "correct horse battery staple", slot 2, scrypt 2^10/8/1, salt 10..1f, nonce 20..2b.
  const KeySlot passphrase = Decoded(
      "020a080100000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b7155602fca3cb45f"
      "089481c4cb2365aad999f8c46eccb33f1c567d8dc507e1f72e91a5cc7480a6c7a151aef46620e4d31439b37b0"
      "014b2d7cc7ccaed51fcf764da334ff835fd4b5e6bea0f57ee0e1faa000000000000000000000000");
  CHECK(passphrase.kind == KeySlotKind::kPassphrase);
  CHECK(passphrase.scrypt == kCheap);
  CHECK(Opens(passphrase, Text("correct horse battery staple"), v, 2));
  CHECK_FALSE(Opens(passphrase, Text("correct horse battery stapler"), v, 2));
  CHECK_FALSE(Opens(passphrase, Text("correct horse battery staple"), v, 3));
  // Key file bytes 40..5f, slot 0, salt 30..3f, nonce 50..5b.
  const KeySlot key_file = Decoded(
      "0100000000000000303132333435363738393a3b3c3d3e3f505152535455565758595a5b6168f7d6cc878d06"
      "907ac9aab3485e95e2ac5e7e1e83b4b3710e7491b396af76a3c087b555b39c661bcf9dbc77389774e0b65203c"
      "e8aff2c561ff4ced5a6aa4fdd90435eb9c9c2a2807f17d5c5975e91000000000000000000000000");
  std::vector<uint8_t> file;
  for (uint8_t b = 0x40; b < 0x60; ++b)
    file.push_back(b);
  CHECK(key_file.kind == KeySlotKind::kKeyFile);
  CHECK(Opens(key_file, file, v, 0));
  file[0] ^= 1;
  CHECK_FALSE(Opens(key_file, file, v, 0));
}

TEST_CASE("key slot: sealed, encoded, decoded and opened; nothing else opens it") {
  Volume v;
  for (const KeySlotKind kind : {KeySlotKind::kKeyFile, KeySlotKind::kPassphrase}) {
    CAPTURE(KeySlotKindName(kind));
    const std::vector<uint8_t> secret = Text("a secret of some length");
    KeySlot sealed;
    REQUIRE(SealKeySlot(kind, secret, v.master, v.uuid, 5, kCheap, &sealed).ok());
    std::array<uint8_t, kKeySlotSize> bytes;
    EncodeKeySlot(sealed, bytes);
    KeySlot slot;
    REQUIRE(DecodeKeySlot(bytes, &slot).ok());
    CHECK(Opens(slot, secret, v, 5));
    CHECK_FALSE(Opens(slot, Text("another secret"), v, 5));
    CHECK_FALSE(Opens(slot, secret, v, 4));  // moved to another index
    Volume other = v;
    other.uuid[0] ^= 1;
    CHECK_FALSE(Opens(slot, secret, other, 5));  // moved to another volume
    KeySlot flipped = slot;
    flipped.wrapped[10] ^= 0x80;
    CHECK_FALSE(Opens(flipped, secret, v, 5));
    KeySlot retagged = slot;
    retagged.tag[0] ^= 1;
    CHECK_FALSE(Opens(retagged, secret, v, 5));
    // Two seals of the same key differ (fresh salt and nonce).
    KeySlot again;
    REQUIRE(SealKeySlot(kind, secret, v.master, v.uuid, 5, kCheap, &again).ok());
    CHECK(again.wrapped != slot.wrapped);
  }
}

TEST_CASE("key slot: a passphrase slot's cost cannot be lowered behind its back") {
  Volume v;
  KeySlot slot;
  REQUIRE(SealKeySlot(KeySlotKind::kPassphrase, Text("pass"), v.master, v.uuid, 0,
                      {.log2_n = 11, .r = 8, .p = 1}, &slot)
              .ok());
  KeySlot cheaper = slot;
  cheaper.scrypt.log2_n = 10;
  CHECK_FALSE(Opens(cheaper, Text("pass"), v, 0));
  CHECK(Opens(slot, Text("pass"), v, 0));
}

TEST_CASE("key slot: refusals") {
  Volume v;
  KeySlot slot;
  Status s = SealKeySlot(KeySlotKind::kPassphrase, {}, v.master, v.uuid, 0, kCheap, &slot);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "an empty key or passphrase opens nothing");
  s = SealKeySlot(KeySlotKind::kEmpty, Text("x"), v.master, v.uuid, 0, kCheap, &slot);
  CHECK(s.message() == "a key slot holds a key file or a passphrase, not empty");
  s = SealKeySlot(KeySlotKind::kKeyFile, Text("x"), std::vector<uint8_t>(32), v.uuid, 0, kCheap,
                  &slot);
  CHECK(s.message() == "a master key has 64 bytes");
  s = SealKeySlot(KeySlotKind::kPassphrase, Text("x"), v.master, v.uuid, 0,
                  {.log2_n = 21, .r = 8, .p = 1}, &slot);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "scrypt parameters out of range (log2 N 21, r 8, p 1; log2 N from 1 to 20, p at most 16)");

  // Decode: an all-zero slot is empty and opens nothing; anything odd is refused.
  std::array<uint8_t, kKeySlotSize> bytes{};
  REQUIRE(DecodeKeySlot(bytes, &slot).ok());
  CHECK(slot.kind == KeySlotKind::kEmpty);
  CryptoPP::SecByteBlock master;
  CHECK(OpenKeySlot(slot, Text("x"), v.uuid, 1, &master).message() == "key slot 1 is empty");
  bytes[127] = 1;
  CHECK(DecodeKeySlot(bytes, &slot).message() == "an empty key slot holds bytes");
  bytes = {};
  bytes[0] = 9;
  CHECK(DecodeKeySlot(bytes, &slot).message() == "unknown key slot kind 9");
  bytes[0] = 2;
  bytes[1] = 30;  // 2^30 * 8 * 128 bytes: refused before anything is derived
  bytes[2] = 8;
  bytes[3] = 1;
  CHECK(DecodeKeySlot(bytes, &slot).err() == EINVAL);
  bytes[0] = 1;
  CHECK(DecodeKeySlot(bytes, &slot).message() == "a key-file slot has no scrypt parameters");
}

TEST_CASE("key slot: a new master key is random") {
  const CryptoPP::SecByteBlock a = NewMasterKey();
  const CryptoPP::SecByteBlock b = NewMasterKey();
  CHECK(a.size() == kMasterKeySize);
  CHECK(a != b);
}

}  // namespace
}  // namespace dst::key_slot_test
