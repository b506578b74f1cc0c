// Key slots of an encrypted volume (docs/format.md, "Key slots"), in the style of LUKS: the
// volume's random master key (common/block_cipher.h) is stored only wrapped, once per slot, each
// slot opened by its own secret: a key file (high-entropy bytes, used as they are) or a
// passphrase (stretched with scrypt, whose parameters the slot records).
//
// A slot is 128 bytes: kind, scrypt parameters, a random salt and nonce, the master key encrypted
// with AES-256-GCM under the key derived from the secret, and GCM's tag. The volume UUID, the
// slot's index, its kind and its parameters are authenticated with it (GCM's associated data),
// so that a slot moved to another volume or index, or its cost lowered, no longer opens. A wrong
// secret and a tampered slot are told apart from nothing: either way the tag does not verify.
//
// Threading: the functions are thread-safe; deriving a passphrase's key takes a moment (scrypt at
// the default cost: 128 MiB of memory, 0.8 s on one core of the development machine), so call
// them off the event loop.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <cryptopp/secblock.h>

#include "common/block_cipher.h"
#include "common/status.h"

namespace dst {

// On-disk codes: never renumber.
enum class KeySlotKind : uint8_t {
  kEmpty = 0,
  kKeyFile = 1,
  kPassphrase = 2,
};

// scrypt's cost: N = 2^log2_n, block size r, parallelization p; memory 128 * r * N bytes.
struct ScryptParams {
  uint8_t log2_n = 17;  // 128 MiB with r = 8: 0.8 s here (2^15: 0.16 s, 2^16: 0.31 s)
  uint8_t r = 8;
  uint8_t p = 1;
  friend bool operator==(const ScryptParams&, const ScryptParams&) = default;
};
// The most a slot may ask for (a slot read from a member must not be able to exhaust memory):
// 2^20 * 8 * 128 = 1 GiB.
inline constexpr uint8_t kMaxScryptLog2N = 20;

inline constexpr size_t kKeySlotSize = 128;
inline constexpr size_t kKeySlots = 8;

struct KeySlot {
  KeySlotKind kind = KeySlotKind::kEmpty;
  ScryptParams scrypt{0, 0, 0};  // kPassphrase only; zeros otherwise
  std::array<uint8_t, 16> salt{};
  std::array<uint8_t, 12> nonce{};
  std::array<uint8_t, kMasterKeySize> wrapped{};
  std::array<uint8_t, 16> tag{};
};

// A new random master key.
CryptoPP::SecByteBlock NewMasterKey();

// Slot `index` of volume `volume_uuid`, opened by `secret` (a key file's bytes, or a passphrase),
// holding `master`. EINVAL for an empty secret, a master key of the wrong size, a kind that is
// not a secret's, or scrypt parameters past the limits.
Status SealKeySlot(KeySlotKind kind, std::span<const uint8_t> secret,
                   std::span<const uint8_t> master, std::span<const uint8_t, 16> volume_uuid,
                   uint32_t index, ScryptParams scrypt, KeySlot* out);
// The master key slot `index` holds, if `secret` opens it: EACCES (`the key does not open key
// slot N`) when it does not, whatever the reason (wrong secret, slot tampered with or moved);
// EINVAL for an empty slot or parameters past the limits.
Status OpenKeySlot(const KeySlot& slot, std::span<const uint8_t> secret,
                   std::span<const uint8_t, 16> volume_uuid, uint32_t index,
                   CryptoPP::SecByteBlock* master);

// The slot's 128 bytes (docs/format.md, "Key slots"), and back. Decode refuses an unknown kind
// and parameters past the limits (EINVAL); an all-zero slot is kEmpty.
void EncodeKeySlot(const KeySlot& slot, std::span<uint8_t, kKeySlotSize> out);
Status DecodeKeySlot(std::span<const uint8_t, kKeySlotSize> in, KeySlot* out);

// "key-file", "passphrase", "empty".
const char* KeySlotKindName(KeySlotKind kind);
// The kind and, for a passphrase, scrypt's cost: "key-file", "passphrase (scrypt 2^17, 8, 1)".
std::string DescribeKeySlot(const KeySlot& slot);

}  // namespace dst
