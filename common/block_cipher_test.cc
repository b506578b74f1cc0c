// The block format of encrypted volumes (common/block_cipher.h): AES-256-XTS against IEEE 1619's
// vector 10, and the whole construction (derived keys, ciphertext, MAC, key check) against the
// fixed vector of docs/format.md, computed with another implementation.
#include "common/block_cipher.h"

#include <cerrno>
#include <string>
#include <vector>

#include <cryptopp/sha.h>
#include <doctest/doctest.h>

#include "common/test_hex.h"

namespace dst::block_cipher_test {
namespace {

using testing::FromHex;
using testing::ToHex;

std::string Sha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, CryptoPP::SHA256::DIGESTSIZE> digest;
  CryptoPP::SHA256().CalculateDigest(digest.data(), bytes.data(), bytes.size());
  return ToHex(digest);
}

// IEEE 1619-2007 annex B, vector 10: XTS-AES-256, data unit 0xff, 512 bytes.
const char kVector10Key[] =
    "2718281828459045235360287471352662497757247093699959574966967627"
    "3141592653589793238462643383279502884197169399375105820974944592";
const char kVector10Ciphertext[] =
    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
    "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
    "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
    "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
    "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
    "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
    "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
    "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a"
    "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
    "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae"
    "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29"
    "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
    "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f"
    "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385"
    "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
    "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";

TEST_CASE("xts: IEEE 1619 vector 10 (XTS-AES-256) both ways, in place too") {
  const std::vector<uint8_t> key = FromHex(kVector10Key);
  Xts xts(std::span<const uint8_t, kXtsKeySize>(key.data(), kXtsKeySize));
  std::vector<uint8_t> plain(512);
  for (size_t i = 0; i < plain.size(); ++i)
    plain[i] = static_cast<uint8_t>(i);
  std::vector<uint8_t> cipher(plain.size());
  REQUIRE(xts.Encrypt(0xff, plain, cipher).ok());
  CHECK(ToHex(cipher) == kVector10Ciphertext);
  std::vector<uint8_t> back(plain.size());
  REQUIRE(xts.Decrypt(0xff, cipher, back).ok());
  CHECK(back == plain);
  // In place, and the tweak matters: another unit, another ciphertext.
  std::vector<uint8_t> buffer = plain;
  REQUIRE(xts.Encrypt(0xff, buffer, buffer).ok());
  CHECK(buffer == cipher);
  REQUIRE(xts.Encrypt(0x100, plain, buffer).ok());
  CHECK(buffer != cipher);
}

TEST_CASE("xts: a data unit is whole cipher units, in and out alike") {
  std::vector<uint8_t> key(kXtsKeySize, 7);
  key[40] = 9;  // the tweak key differs from the data key
  Xts xts(std::span<const uint8_t, kXtsKeySize>(key.data(), kXtsKeySize));
  std::vector<uint8_t> in(4096), out(4096), short_out(4080), odd(4095);
  CHECK(xts.Encrypt(1, in, short_out).err() == EINVAL);
  const Status s = xts.Decrypt(1, odd, std::span<uint8_t>(out.data(), odd.size()));
  CHECK(s.err() == EINVAL);
  CHECK(s.message() ==
        "a cipher block is a multiple of 16 bytes, in and out alike (4095 in, "
        "4095 out)");
  CHECK(xts.Encrypt(1, std::span<const uint8_t>(), std::span<uint8_t>()).err() == EINVAL);
  CHECK(out == std::vector<uint8_t>(4096, 0));
}

// docs/format.md, "Encrypted blocks": master key 00..3f, volume UUID a0..af, block 5, plaintext
// byte i = (7 i + 3) mod 256 over 4096 bytes.
TEST_CASE("block cipher: the fixed vector of the block format") {
  std::vector<uint8_t> master(kMasterKeySize);
  for (size_t i = 0; i < master.size(); ++i)
    master[i] = static_cast<uint8_t>(i);
  std::array<uint8_t, 16> uuid;
  for (size_t i = 0; i < uuid.size(); ++i)
    uuid[i] = static_cast<uint8_t>(0xa0 + i);
  std::vector<uint8_t> plain(4096);
  for (size_t i = 0; i < plain.size(); ++i)
    plain[i] = static_cast<uint8_t>(i * 7 + 3);
  std::unique_ptr<BlockCipher> cipher;
  REQUIRE(BlockCipher::Create(master, &cipher).ok());
  std::vector<uint8_t> ct(plain.size());
  REQUIRE(cipher->Encrypt(5, plain, ct).ok());
  CHECK(ToHex(std::span(ct).first(32)) ==
        "5041ac78ce07db85a0f7a74aba2a678e141a8b5c746727622b4b35ef2dc2a20d");
  CHECK(Sha256(ct) == "2e1e37cebeacfe2018905fe40a663c798cb06f361456aa3ece0a22c784357c52");
  CHECK(cipher->Mac(uuid, 5, ct).ToHex() ==
        "a0662c571a0ca50bb9f4d19257c833a15537da229491734879918e0ce077f4d1");
  CHECK(ToHex(cipher->Check(uuid)) ==
        "556742789b3d32642dbb02a0c2fb5c31133c962522d8ea8751e016e2192758bf");
  std::vector<uint8_t> back(ct.size());
  REQUIRE(cipher->Decrypt(5, ct, back).ok());
  CHECK(back == plain);
}

TEST_CASE("block cipher: the MAC binds the ciphertext to its volume and block") {
  std::vector<uint8_t> master(kMasterKeySize, 0x5a);
  std::unique_ptr<BlockCipher> cipher;
  REQUIRE(BlockCipher::Create(master, &cipher).ok());
  std::array<uint8_t, 16> uuid{}, other_uuid{};
  other_uuid[15] = 1;
  std::vector<uint8_t> ct(4096, 0x11);
  const Digest mac = cipher->Mac(uuid, 9, ct);
  CHECK(cipher->Mac(uuid, 9, ct) == mac);
  CHECK(cipher->Mac(uuid, 10, ct) != mac);       // moved to another block
  CHECK(cipher->Mac(other_uuid, 9, ct) != mac);  // copied from another volume
  ct[100] ^= 1;
  CHECK(cipher->Mac(uuid, 9, ct) != mac);  // one bit flipped
  // Another master key: another MAC, another key check; the same block decrypts to garbage.
  std::vector<uint8_t> other_master(kMasterKeySize, 0x5b);
  std::unique_ptr<BlockCipher> other;
  REQUIRE(BlockCipher::Create(other_master, &other).ok());
  ct[100] ^= 1;
  CHECK(other->Mac(uuid, 9, ct) != mac);
  CHECK(other->Check(uuid) != cipher->Check(uuid));
  CHECK(cipher->Check(other_uuid) != cipher->Check(uuid));
}

TEST_CASE("block cipher: a master key has 64 bytes") {
  std::unique_ptr<BlockCipher> cipher;
  const Status s = BlockCipher::Create(std::vector<uint8_t>(32, 1), &cipher);
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "an encryption master key has 64 bytes, not 32");
  CHECK(cipher == nullptr);
}

}  // namespace
}  // namespace dst::block_cipher_test
