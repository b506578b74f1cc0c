#include "common/checksum.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include <cryptopp/blake2.h>
#include <cryptopp/crc.h>
#include <doctest/doctest.h>

using dst::BlockChecksum;
using dst::ChecksumAlgorithm;
using dst::Checksummer;
using dst::Digest;

namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::vector<uint8_t> Iota(size_t n, uint8_t first = 0) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

Checksummer Make(ChecksumAlgorithm algorithm, std::span<const uint8_t> key = {}) {
  Checksummer::Result result = Checksummer::Create(algorithm, key);
  REQUIRE_MESSAGE(result.ok(), result.status.ToString());
  return std::move(*result.checksummer);
}

// The CRC value stored big-endian in the digest.
uint32_t CrcValue(const Digest& d) {
  REQUIRE(d.size() == 4);
  return uint32_t{d.bytes[0]} << 24 | uint32_t{d.bytes[1]} << 16 | uint32_t{d.bytes[2]} << 8 |
         d.bytes[3];
}

uint32_t Crc32c(std::span<const uint8_t> data) {
  return CrcValue(Make(ChecksumAlgorithm::kCrc32c).Compute(data));
}

std::string Blake2bHex(std::span<const uint8_t> data, std::span<const uint8_t> key,
                       unsigned digest_size) {
  CryptoPP::BLAKE2b hash = key.empty() ? CryptoPP::BLAKE2b(false, digest_size)
                                       : CryptoPP::BLAKE2b(key.data(), key.size(), nullptr, 0,
                                                           nullptr, 0, false, digest_size);
  hash.Update(data.data(), data.size());
  std::vector<uint8_t> out(digest_size);
  hash.Final(out.data());
  std::string hex;
  for (uint8_t b : out) {
    hex += "0123456789abcdef"[b >> 4];
    hex += "0123456789abcdef"[b & 0xf];
  }
  return hex;
}

constexpr std::array<uint8_t, 16> kUuid = {0x6b, 0x1e, 0x2c, 0x3d, 0x4e, 0x5f, 0x40, 0x71,
                                           0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8, 0xf9};

}  // namespace

TEST_CASE("checksum: algorithm names, parsing and on-disk codes round trip") {
  for (ChecksumAlgorithm a : {ChecksumAlgorithm::kCrc32c, ChecksumAlgorithm::kBlake2b,
                              ChecksumAlgorithm::kBlake2bKeyed}) {
    CHECK(dst::ParseChecksumAlgorithm(dst::ChecksumAlgorithmName(a)) == a);
    CHECK(dst::ChecksumAlgorithmFromCode(static_cast<uint8_t>(a)) == a);
  }
  // The codes are an on-disk format: pin them.
  CHECK(static_cast<int>(ChecksumAlgorithm::kCrc32c) == 1);
  CHECK(static_cast<int>(ChecksumAlgorithm::kBlake2b) == 2);
  CHECK(static_cast<int>(ChecksumAlgorithm::kBlake2bKeyed) == 3);
  CHECK(std::string_view(dst::ChecksumAlgorithmName(ChecksumAlgorithm::kBlake2bKeyed)) ==
        "blake2b-keyed");
  CHECK(std::string_view(dst::ChecksumAlgorithmName(static_cast<ChecksumAlgorithm>(9))) ==
        "unknown");
  CHECK_FALSE(dst::ParseChecksumAlgorithm("CRC32C").has_value());
  CHECK_FALSE(dst::ParseChecksumAlgorithm("").has_value());
  CHECK_FALSE(dst::ParseChecksumAlgorithm("sha256").has_value());
  CHECK_FALSE(dst::ChecksumAlgorithmFromCode(0).has_value());
  CHECK_FALSE(dst::ChecksumAlgorithmFromCode(4).has_value());
  CHECK(dst::ChecksumSize(ChecksumAlgorithm::kCrc32c) == 4);
  CHECK(dst::ChecksumSize(ChecksumAlgorithm::kBlake2b) == 32);
  CHECK(dst::ChecksumSize(ChecksumAlgorithm::kBlake2bKeyed) == 32);
}

TEST_CASE("checksum: crc32c matches the published check values, stored big-endian") {
  Checksummer crc = Make(ChecksumAlgorithm::kCrc32c);
  const Digest check = crc.Compute(Bytes("123456789"));
  CHECK(check.size() == 4);
  CHECK(check.ToHex() == "e3069283");  // the Castagnoli/iSCSI check value 0xE3069283
  CHECK(std::all_of(check.bytes.begin() + 4, check.bytes.end(), [](uint8_t b) { return b == 0; }));

  // RFC 3720 appendix B.4.
  CHECK(Crc32c(std::vector<uint8_t>(32, 0x00)) == 0x8A9136AAu);
  CHECK(Crc32c(std::vector<uint8_t>(32, 0xff)) == 0x62A8AB43u);
  CHECK(Crc32c(Iota(32)) == 0x46DD794Eu);
  std::vector<uint8_t> descending = Iota(32);
  std::reverse(descending.begin(), descending.end());
  CHECK(Crc32c(descending) == 0x113FDB5Cu);
}

// CRC32C runs on ISA-L; Crypto++'s own CRC32C is the independent reference, over lengths around
// ISA-L's internal strides and split into uneven incremental pieces.
TEST_CASE("checksum: crc32c agrees with Crypto++'s CRC32C for every length and split") {
  std::vector<uint8_t> data(9000);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i * 131 + (i >> 7));
  auto made = dst::Checksummer::Create(dst::ChecksumAlgorithm::kCrc32c);
  REQUIRE(made.ok());
  dst::Checksummer& ck = *made.checksummer;
  for (size_t length : {0, 1, 7, 8, 15, 63, 64, 255, 256, 511, 4095, 4096, 4097, 8192, 9000}) {
    CryptoPP::CRC32C reference;
    std::array<uint8_t, 4> expected{};
    reference.CalculateDigest(expected.data(), data.data(), length);
    std::reverse(expected.begin(), expected.end());  // stored big-endian
    const dst::Digest whole = ck.Compute({data.data(), length});
    CHECK_MESSAGE(std::equal(expected.begin(), expected.end(), whole.bytes.begin()), length);
    ck.Update({data.data(), length / 3});
    ck.Update({data.data() + length / 3, length - length / 3});
    CHECK(ck.Final() == whole);
  }
}

TEST_CASE("checksum: BLAKE2b matches RFC 7693 and the reference known answers") {
  // RFC 7693 appendix A: BLAKE2b-512("abc"), through Crypto++ as the checksummer uses it.
  CHECK(Blake2bHex(Bytes("abc"), {}, 64) ==
        "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
        "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923");

  // BLAKE2b-256("") is its own parameterisation, not a prefix of BLAKE2b-512("").
  Checksummer blake = Make(ChecksumAlgorithm::kBlake2b);
  const Digest empty = blake.Compute({});
  CHECK(empty.size() == 32);
  CHECK(empty.ToHex() == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  CHECK(Blake2bHex({}, {}, 64).substr(0, 64) != empty.ToHex());

  // blake2b-kat.txt: key 00..3f, empty input, 64-byte digest.
  const std::vector<uint8_t> key = Iota(64);
  CHECK(Blake2bHex({}, key, 64) ==
        "10ebb67700b1868efb4417987acf4690ae9d972fb7a590c2f02871799aaa4786"
        "b5e996e8f0f4eb981fc214b005f42d2ff4233499391653df7aefcbc13fc51568");
}

TEST_CASE("checksum: keyed BLAKE2b-256 depends on the key and is deterministic") {
  const std::vector<uint8_t> key = Iota(64);
  Checksummer keyed = Make(ChecksumAlgorithm::kBlake2bKeyed, key);
  const Digest mac = keyed.Compute({});
  CHECK(mac.size() == 32);
  CHECK(mac != Make(ChecksumAlgorithm::kBlake2b).Compute({}));
  CHECK(mac == keyed.Compute({}));  // Final() restarts with the key still applied
  CHECK(mac == Make(ChecksumAlgorithm::kBlake2bKeyed, key).Compute({}));
  // Same key through the reference implementation (Python hashlib.blake2b, digest_size=32).
  CHECK(mac.ToHex() == "2fa9fbd9be36437de204e139e97d402bce68c828f43391608c891b5faed8a98a");
  CHECK(mac.ToHex() != Blake2bHex({}, key, 64).substr(0, 64));

  std::vector<uint8_t> other_key = key;
  other_key[63] ^= 1;
  CHECK(Make(ChecksumAlgorithm::kBlake2bKeyed, other_key).Compute({}) != mac);
  const std::array<uint8_t, 1> short_key = {0};
  CHECK(Make(ChecksumAlgorithm::kBlake2bKeyed, short_key).Compute({}) != mac);
}

TEST_CASE("checksum: Create refuses wrong key lengths and unknown algorithms with EINVAL") {
  const std::vector<uint8_t> too_long(65, 7);
  const std::vector<uint8_t> key(16, 7);
  const auto refused = [](const Checksummer::Result& r) {
    return !r.ok() && r.status.err() == EINVAL && !r.checksummer.has_value();
  };
  CHECK(refused(Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed)));
  CHECK(refused(Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, too_long)));
  CHECK(refused(Checksummer::Create(ChecksumAlgorithm::kBlake2b, key)));
  CHECK(refused(Checksummer::Create(ChecksumAlgorithm::kCrc32c, key)));
  CHECK(refused(Checksummer::Create(static_cast<ChecksumAlgorithm>(0))));
  const Checksummer::Result r = Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, too_long);
  CHECK(r.status.message() ==
        "checksum algorithm blake2b-keyed needs a key of 1..64 bytes, got 65");
  CHECK(Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, std::vector<uint8_t>(64, 1)).ok());
}

TEST_CASE("checksum: incremental Update equals one-shot Compute; Reset discards input") {
  const std::vector<uint8_t> data = Iota(1000, 3);
  const std::vector<uint8_t> key(32, 0x5a);
  for (ChecksumAlgorithm a : {ChecksumAlgorithm::kCrc32c, ChecksumAlgorithm::kBlake2b,
                              ChecksumAlgorithm::kBlake2bKeyed}) {
    CAPTURE(dst::ChecksumAlgorithmName(a));
    Checksummer c = Make(a, a == ChecksumAlgorithm::kBlake2bKeyed ? key : std::vector<uint8_t>{});
    const Digest whole = c.Compute(data);
    for (size_t split : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{999}}) {
      CAPTURE(split);
      const std::span<const uint8_t> all(data);
      c.Update(all.first(split));
      c.Update({});
      c.Update(all.subspan(split));
      CHECK(c.Final() == whole);
    }
    c.Update(Bytes("garbage"));
    c.Reset();
    c.Update(data);
    CHECK(c.Final() == whole);

    Checksummer moved = std::move(c);
    CHECK(moved.Compute(data) == whole);
    CHECK(moved.algorithm() == a);
    CHECK(moved.size() == dst::ChecksumSize(a));
  }
}

TEST_CASE("BlockChecksum hashes uuid, big-endian address and data") {
  const std::vector<uint8_t> data = Iota(4096, 9);
  const uint64_t address = 0x0102030405060708;
  for (ChecksumAlgorithm a : {ChecksumAlgorithm::kCrc32c, ChecksumAlgorithm::kBlake2b}) {
    CAPTURE(dst::ChecksumAlgorithmName(a));
    Checksummer c = Make(a);
    c.Update(Bytes("left over"));  // BlockChecksum must not depend on earlier input
    const Digest base = BlockChecksum(c, kUuid, address, data);

    c.Update(kUuid);
    c.Update(Iota(8, 1));  // 01 02 .. 08
    c.Update(data);
    CHECK(c.Final() == base);

    std::array<uint8_t, 16> uuid = kUuid;
    uuid[15] ^= 0x01;
    CHECK(BlockChecksum(c, uuid, address, data) != base);
    CHECK(BlockChecksum(c, kUuid, address + 1, data) != base);
    CHECK(BlockChecksum(c, kUuid, address ^ (uint64_t{1} << 63), data) != base);
    std::vector<uint8_t> flipped = data;
    flipped[2048] ^= 0x10;
    CHECK(BlockChecksum(c, kUuid, address, flipped) != base);
    CHECK(BlockChecksum(c, kUuid, address, data) == base);
  }
}

TEST_CASE("BlockChecksum never returns the all-zero 'never written' marker") {
  // CRC32C is affine in the message bits, so the last 4 data bytes can be chosen to make the raw
  // checksum exactly zero: solve L(delta) = crc(base) over GF(2).
  Checksummer c = Make(ChecksumAlgorithm::kCrc32c);
  const uint64_t address = 42;
  const auto raw = [&](std::span<const uint8_t> data) {
    c.Update(kUuid);
    const std::array<uint8_t, 8> be = {0, 0, 0, 0, 0, 0, 0, 42};
    c.Update(be);
    c.Update(data);
    return CrcValue(c.Final());
  };
  std::vector<uint8_t> data = Iota(64);
  const uint32_t base = raw(data);
  std::array<uint32_t, 32> pivot_value{}, pivot_bits{};  // Gaussian elimination, by top bit
  for (size_t bit = 0; bit < 32; ++bit) {
    std::vector<uint8_t> probe = data;
    probe[60 + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    uint32_t value = raw(probe) ^ base, bits = uint32_t{1} << bit;
    for (int top = 31; top >= 0 && value != 0; --top) {
      if (!(value >> top & 1)) continue;
      if (pivot_value[top] == 0) {
        pivot_value[top] = value;
        pivot_bits[top] = bits;
        break;
      }
      value ^= pivot_value[top];
      bits ^= pivot_bits[top];
    }
  }
  uint32_t target = base, flip = 0;
  for (int top = 31; top >= 0; --top) {
    if (!(target >> top & 1)) continue;
    REQUIRE(pivot_value[top] != 0);
    target ^= pivot_value[top];
    flip ^= pivot_bits[top];
  }
  for (size_t bit = 0; bit < 32; ++bit) {
    if (flip >> bit & 1) data[60 + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
  REQUIRE(raw(data) == 0);

  const Digest d = BlockChecksum(c, kUuid, address, data);
  CHECK_FALSE(d.IsZero());
  CHECK(d.ToHex() == "00000001");
}

TEST_CASE("checksum: Digest keeps bytes past size() zero") {
  Digest d;
  CHECK(d.IsZero());
  CHECK(d.ToHex().empty());
  const Digest crc = Make(ChecksumAlgorithm::kCrc32c).Compute(Bytes("x"));
  CHECK(crc.span().size() == 4);
  CHECK(std::all_of(crc.bytes.begin() + 4, crc.bytes.end(), [](uint8_t b) { return b == 0; }));
  CHECK_FALSE(crc.IsZero());
}
