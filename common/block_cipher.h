// BlockCipher: how one block of an encrypted volume is stored (docs/encryption.md, the block
// format): AES-256-XTS (IEEE 1619) with the volume block number as the data unit's tweak, then
// encrypt-then-MAC: the block's table entry is keyed BLAKE2b-256 over (volume UUID, big-endian
// block address, ciphertext), computed as BlockChecksum computes a keyed checksum. A hole (an
// entry of zeros) never reaches the cipher.
//
// Keys: the volume's random 64-byte master key is never used directly. Three keys are derived
// from it with keyed BLAKE2b under distinct labels, so that no one of them tells anything of the
// others or of the master key:
//   - the XTS key (64 bytes: the data key, then the tweak key) = BLAKE2b-512(key = master, "dst xts
//   key");
//   - the MAC key (32 bytes)  = BLAKE2b-256(key = master, "dst mac key");
//   - the key check (32 bytes) = BLAKE2b-256(key = master, "dst key check" || volume UUID), a
//     value stored in the superblocks so that assembly refuses a wrong key before any I/O.
// Derived keys live in CryptoPP::SecByteBlock, wiped when the cipher is destroyed.
//
// Threading: a BlockCipher is NOT thread-safe (the XTS and BLAKE2b objects carry state): give each
// thread its own. Create() is thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include <cryptopp/secblock.h>

#include "common/checksum.h"
#include "common/status.h"

namespace dst {

inline constexpr size_t kMasterKeySize = 64;
inline constexpr size_t kXtsKeySize = 64;  // the data key, then the tweak key
inline constexpr size_t kCipherUnit = 16;  // AES's block: cipher blocks are multiples of it
using KeyCheck = std::array<uint8_t, 32>;

// The bytes of a text label (the KDF contexts).
inline std::span<const uint8_t> LabelBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// AES-256-XTS (IEEE 1619) over whole data units, the unit's sequence number as the tweak
// (little-endian, as the standard has it). Not thread-safe.
class Xts {
 public:
  explicit Xts(std::span<const uint8_t, kXtsKeySize> key);
  ~Xts();
  Xts(const Xts&) = delete;
  Xts& operator=(const Xts&) = delete;

  // `in` (data unit `unit`) into `out`, of the same size: a multiple of kCipherUnit, at least
  // one unit (EINVAL otherwise; `out` untouched). `in` and `out` may be the same bytes.
  Status Encrypt(uint64_t unit, std::span<const uint8_t> in, std::span<uint8_t> out);
  Status Decrypt(uint64_t unit, std::span<const uint8_t> in, std::span<uint8_t> out);

 private:
  struct Modes;
  Status Process(bool encrypt, uint64_t unit, std::span<const uint8_t> in, std::span<uint8_t> out);
  std::unique_ptr<Modes> modes_;
};

class BlockCipher {
 public:
  // EINVAL unless `master_key` has kMasterKeySize bytes.
  static Status Create(std::span<const uint8_t> master_key, std::unique_ptr<BlockCipher>* out);
  ~BlockCipher();
  BlockCipher(const BlockCipher&) = delete;
  BlockCipher& operator=(const BlockCipher&) = delete;

  // `in` (the plaintext of volume block `block`) encrypted into `out`, as Xts does it.
  Status Encrypt(uint64_t block, std::span<const uint8_t> in, std::span<uint8_t> out);
  Status Decrypt(uint64_t block, std::span<const uint8_t> in, std::span<uint8_t> out);
  // The table entry of `ciphertext`, block `block` of the volume `volume_uuid`.
  Digest Mac(std::span<const uint8_t, 16> volume_uuid, uint64_t block,
             std::span<const uint8_t> ciphertext);
  // Whether a master key is this volume's, without telling anything of it.
  KeyCheck Check(std::span<const uint8_t, 16> volume_uuid) const;
  // The master key itself, to seal another key slot with.
  std::span<const uint8_t> master_key() const;

  // The MAC key of `master_key` (kMasterKeySize bytes), for a Checksummer that computes table
  // entries as Mac() does.
  static CryptoPP::SecByteBlock MacKey(std::span<const uint8_t> master_key);

 private:
  struct Keys;
  explicit BlockCipher(std::unique_ptr<Keys> keys);

  std::unique_ptr<Keys> keys_;
};

}  // namespace dst
