// Block checksums for end-to-end integrity: CRC32C and BLAKE2b (plain or keyed) behind one
// small interface over Crypto++, plus BlockChecksum(), the value the aggregator stores per block.
// Every digest fits a 32-byte table entry. A Checksummer is NOT thread-safe: give each thread its
// own and reuse it (Final() and Reset() leave it ready for the next message). The free functions
// are thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace CryptoPP {
class HashTransformation;
}  // namespace CryptoPP

namespace dst {

// The numeric values are written to disk (volume superblock) to say how a table was computed:
// never renumber them and never reuse a retired value for another algorithm.
enum class ChecksumAlgorithm : uint8_t {
  kCrc32c = 1,        // Castagnoli CRC (iSCSI); detects corruption, not tampering.
  kBlake2b = 2,       // BLAKE2b-256, unkeyed.
  kBlake2bKeyed = 3,  // BLAKE2b-256 keyed (a MAC): also detects deliberate rewrites.
};

// "crc32c", "blake2b", "blake2b-keyed"; "unknown" for a value outside the enum (e.g. from disk).
const char* ChecksumAlgorithmName(ChecksumAlgorithm algorithm);
// Inverse of ChecksumAlgorithmName (exact, lower-case); nullopt for anything else.
std::optional<ChecksumAlgorithm> ParseChecksumAlgorithm(std::string_view name);
// Validates a code read from disk; nullopt for a value not assigned above.
std::optional<ChecksumAlgorithm> ChecksumAlgorithmFromCode(uint8_t code);
// Digest length in bytes: 4 for CRC32C, 32 for both BLAKE2b variants, 0 for an unknown value.
size_t ChecksumSize(ChecksumAlgorithm algorithm);

inline constexpr size_t kMaxDigestSize = 32;  // one on-disk table entry
inline constexpr size_t kMinChecksumKeySize = 1;
inline constexpr size_t kMaxChecksumKeySize = 64;  // BLAKE2b's limit

// A digest of size() <= kMaxDigestSize bytes. Bytes past size() are always zero, so `bytes` can
// be stored as a 32-byte table entry as is.
//  - CRC32C: the CRC value big-endian in the first 4 bytes (0xE3069283 -> e3 06 92 83).
//  - BLAKE2b: BLAKE2b with a 32-byte digest parameter. That is the distinct BLAKE2b-256
//    parameterisation (output length is hashed into the parameter block), NOT the first 32 bytes
//    of BLAKE2b-512, so it matches other BLAKE2b-256 implementations.
struct Digest {
  std::array<uint8_t, kMaxDigestSize> bytes{};
  uint8_t length = 0;

  size_t size() const { return length; }
  std::span<const uint8_t> span() const { return {bytes.data(), length}; }
  bool IsZero() const;
  std::string ToHex() const;  // lower-case, size() * 2 characters
  // Whether a table entry holds this digest: its entry.size() bytes equal the digest's first ones
  // (the comparison every verification of a block makes).
  bool Matches(std::span<const uint8_t> entry) const {
    return entry.size() <= bytes.size() &&
           std::memcmp(entry.data(), bytes.data(), entry.size()) == 0;
  }

  friend bool operator==(const Digest&, const Digest&) = default;
};

// Incremental checksum computation. Creation allocates one small Crypto++ object, so it is cheap,
// but a per-thread object reused with Reset()/Final() avoids even that per block. Move-only; a
// moved-from Checksummer may only be destroyed or assigned to.
class Checksummer {
 public:
  struct Result;

  // kBlake2bKeyed requires a key of kMinChecksumKeySize..kMaxChecksumKeySize bytes; the other
  // algorithms refuse any key. Errors are EINVAL.
  static Result Create(ChecksumAlgorithm algorithm, std::span<const uint8_t> key = {});

  Checksummer(Checksummer&& other) noexcept;
  Checksummer& operator=(Checksummer&& other) noexcept;
  ~Checksummer();

  ChecksumAlgorithm algorithm() const { return algorithm_; }
  size_t size() const { return ChecksumSize(algorithm_); }

  void Update(std::span<const uint8_t> data);
  // Returns the digest of everything passed to Update() since the last Final()/Reset(), and
  // starts a new message (with the same key).
  Digest Final();
  // Discards any input since the last Final()/Reset().
  void Reset();
  // One-shot: Reset(), Update(data), Final().
  Digest Compute(std::span<const uint8_t> data);

 private:
  Checksummer(ChecksumAlgorithm algorithm, std::unique_ptr<CryptoPP::HashTransformation> hash);

  ChecksumAlgorithm algorithm_;
  std::unique_ptr<CryptoPP::HashTransformation> hash_;
};

// Either a Checksummer (status.ok()) or the reason none could be created.
struct Checksummer::Result {
  Status status;
  std::optional<Checksummer> checksummer;

  bool ok() const { return status.ok(); }
};

// The checksum stored for one block: hash(volume_uuid || big-endian 64-bit block_address || data).
// The uuid and address bind the data to its place, so a block written to the wrong volume or
// offset fails verification even though its content is intact. An all-zero entry means "never
// written" in the table, so a result that hashes to all zeros gets its last byte (byte size()-1)
// set to 1; verification must use this function too. Resets `checksummer` first.
Digest BlockChecksum(Checksummer& checksummer, std::span<const uint8_t, 16> volume_uuid,
                     uint64_t block_address, std::span<const uint8_t> data);

}  // namespace dst
