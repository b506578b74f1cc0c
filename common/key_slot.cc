#include "common/key_slot.h"

#include <algorithm>
#include <cerrno>
#include <string_view>
#include <vector>

#include <cryptopp/aes.h>
#include <cryptopp/blake2.h>
#include <cryptopp/gcm.h>
#include <cryptopp/osrng.h>
#include <cryptopp/scrypt.h>

namespace dst {

namespace {

constexpr std::string_view kKeyFileLabel = "dst key file";
constexpr std::string_view kAadLabel = "dst key slot";
constexpr size_t kKekSize = 32;
constexpr size_t kHeaderSize = 8;  // kind, scrypt parameters, reserved: authenticated as they are

// Offsets in the 128-byte slot.
constexpr size_t kSaltAt = 8;
constexpr size_t kNonceAt = 24;
constexpr size_t kWrappedAt = 36;
constexpr size_t kTagAt = 100;
constexpr size_t kEndAt = 116;  // then zeros

Status CheckScrypt(const ScryptParams& s) {
  if (s.log2_n < 1 || s.log2_n > kMaxScryptLog2N || s.r < 1 || s.p < 1 || s.p > 16)
    return Status::Error(EINVAL, "scrypt parameters out of range (log2 N " +
                                     std::to_string(s.log2_n) + ", r " + std::to_string(s.r) +
                                     ", p " + std::to_string(s.p) + "; log2 N from 1 to " +
                                     std::to_string(kMaxScryptLog2N) + ", p at most 16)");
  return Status::Ok();
}

std::array<uint8_t, kHeaderSize> Header(const KeySlot& slot) {
  return {static_cast<uint8_t>(slot.kind),
          slot.scrypt.log2_n,
          slot.scrypt.r,
          slot.scrypt.p,
          0,
          0,
          0,
          0};
}

// The key that wraps the master key: from a key file's bytes as they are, from a passphrase
// through scrypt.
CryptoPP::SecByteBlock KeyEncryptionKey(const KeySlot& slot, std::span<const uint8_t> secret) {
  CryptoPP::SecByteBlock kek(kKekSize);
  if (slot.kind == KeySlotKind::kKeyFile) {
    CryptoPP::BLAKE2b hash(slot.salt.data(), slot.salt.size(), nullptr, 0, nullptr, 0, false,
                           kKekSize);
    hash.Update(LabelBytes(kKeyFileLabel).data(), kKeyFileLabel.size());
    hash.Update(secret.data(), secret.size());
    hash.Final(kek.data());
    return kek;
  }
  CryptoPP::Scrypt().DeriveKey(
      kek.data(), kek.size(), secret.data(), secret.size(), slot.salt.data(), slot.salt.size(),
      CryptoPP::word64{1} << slot.scrypt.log2_n, slot.scrypt.r, slot.scrypt.p);
  return kek;
}

// What GCM authenticates besides the key: the volume, the slot's place, its kind and cost.
std::vector<uint8_t> AssociatedData(const KeySlot& slot, std::span<const uint8_t, 16> volume_uuid,
                                    uint32_t index) {
  std::vector<uint8_t> aad(kAadLabel.begin(), kAadLabel.end());
  aad.insert(aad.end(), volume_uuid.begin(), volume_uuid.end());
  for (int shift = 24; shift >= 0; shift -= 8)
    aad.push_back(static_cast<uint8_t>(index >> shift));
  const std::array<uint8_t, kHeaderSize> header = Header(slot);
  aad.insert(aad.end(), header.begin(), header.end());
  return aad;
}

}  // namespace

std::string DescribeKeySlot(const KeySlot& slot) {
  std::string text = KeySlotKindName(slot.kind);
  if (slot.kind == KeySlotKind::kPassphrase)
    text += " (scrypt 2^" + std::to_string(slot.scrypt.log2_n) + ", " +
            std::to_string(slot.scrypt.r) + ", " + std::to_string(slot.scrypt.p) + ")";
  return text;
}

const char* KeySlotKindName(KeySlotKind kind) {
  switch (kind) {
    case KeySlotKind::kEmpty:
      return "empty";
    case KeySlotKind::kKeyFile:
      return "key-file";
    case KeySlotKind::kPassphrase:
      return "passphrase";
  }
  return "unknown";
}

CryptoPP::SecByteBlock NewMasterKey() {
  CryptoPP::SecByteBlock master(kMasterKeySize);
  CryptoPP::AutoSeededRandomPool().GenerateBlock(master.data(), master.size());
  return master;
}

Status SealKeySlot(KeySlotKind kind, std::span<const uint8_t> secret,
                   std::span<const uint8_t> master, std::span<const uint8_t, 16> volume_uuid,
                   uint32_t index, ScryptParams scrypt, KeySlot* out) {
  if (kind != KeySlotKind::kKeyFile && kind != KeySlotKind::kPassphrase)
    return Status::Error(EINVAL, std::string("a key slot holds a key file or a passphrase, not ") +
                                     KeySlotKindName(kind));
  if (secret.empty()) return Status::Error(EINVAL, "an empty key or passphrase opens nothing");
  if (master.size() != kMasterKeySize)
    return Status::Error(EINVAL, "a master key has " + std::to_string(kMasterKeySize) + " bytes");
  KeySlot slot;
  slot.kind = kind;
  if (kind == KeySlotKind::kPassphrase) {
    DST_RETURN_IF_ERROR(CheckScrypt(scrypt));
    slot.scrypt = scrypt;
  }
  CryptoPP::AutoSeededRandomPool random;
  random.GenerateBlock(slot.salt.data(), slot.salt.size());
  random.GenerateBlock(slot.nonce.data(), slot.nonce.size());
  const CryptoPP::SecByteBlock kek = KeyEncryptionKey(slot, secret);
  const std::vector<uint8_t> aad = AssociatedData(slot, volume_uuid, index);
  CryptoPP::GCM<CryptoPP::AES>::Encryption gcm;
  gcm.SetKeyWithIV(kek.data(), kek.size(), slot.nonce.data(), slot.nonce.size());
  gcm.EncryptAndAuthenticate(slot.wrapped.data(), slot.tag.data(), slot.tag.size(),
                             slot.nonce.data(), static_cast<int>(slot.nonce.size()), aad.data(),
                             aad.size(), master.data(), master.size());
  *out = slot;
  return Status::Ok();
}

Status OpenKeySlot(const KeySlot& slot, std::span<const uint8_t> secret,
                   std::span<const uint8_t, 16> volume_uuid, uint32_t index,
                   CryptoPP::SecByteBlock* master) {
  if (slot.kind != KeySlotKind::kKeyFile && slot.kind != KeySlotKind::kPassphrase)
    return Status::Error(EINVAL,
                         "key slot " + std::to_string(index) + " is " + KeySlotKindName(slot.kind));
  if (slot.kind == KeySlotKind::kPassphrase) DST_RETURN_IF_ERROR(CheckScrypt(slot.scrypt));
  const Status refused =
      Status::Error(EACCES, "the key does not open key slot " + std::to_string(index));
  if (secret.empty()) return refused;
  const CryptoPP::SecByteBlock kek = KeyEncryptionKey(slot, secret);
  const std::vector<uint8_t> aad = AssociatedData(slot, volume_uuid, index);
  CryptoPP::GCM<CryptoPP::AES>::Decryption gcm;
  gcm.SetKeyWithIV(kek.data(), kek.size(), slot.nonce.data(), slot.nonce.size());
  CryptoPP::SecByteBlock opened(kMasterKeySize);
  if (!gcm.DecryptAndVerify(opened.data(), slot.tag.data(), slot.tag.size(), slot.nonce.data(),
                            static_cast<int>(slot.nonce.size()), aad.data(), aad.size(),
                            slot.wrapped.data(), slot.wrapped.size()))
    return refused;
  *master = std::move(opened);
  return Status::Ok();
}

void EncodeKeySlot(const KeySlot& slot, std::span<uint8_t, kKeySlotSize> out) {
  std::fill(out.begin(), out.end(), 0);
  if (slot.kind == KeySlotKind::kEmpty) return;
  const std::array<uint8_t, kHeaderSize> header = Header(slot);
  std::copy(header.begin(), header.end(), out.begin());
  std::copy(slot.salt.begin(), slot.salt.end(), out.begin() + kSaltAt);
  std::copy(slot.nonce.begin(), slot.nonce.end(), out.begin() + kNonceAt);
  std::copy(slot.wrapped.begin(), slot.wrapped.end(), out.begin() + kWrappedAt);
  std::copy(slot.tag.begin(), slot.tag.end(), out.begin() + kTagAt);
}

Status DecodeKeySlot(std::span<const uint8_t, kKeySlotSize> in, KeySlot* out) {
  KeySlot slot;
  slot.kind = static_cast<KeySlotKind>(in[0]);
  if (slot.kind == KeySlotKind::kEmpty) {
    if (std::any_of(in.begin(), in.end(), [](uint8_t b) { return b != 0; }))
      return Status::Error(EINVAL, "an empty key slot holds bytes");
    *out = slot;
    return Status::Ok();
  }
  if (slot.kind != KeySlotKind::kKeyFile && slot.kind != KeySlotKind::kPassphrase)
    return Status::Error(EINVAL, "unknown key slot kind " + std::to_string(in[0]));
  slot.scrypt = {in[1], in[2], in[3]};
  if (slot.kind == KeySlotKind::kPassphrase) DST_RETURN_IF_ERROR(CheckScrypt(slot.scrypt));
  if (slot.kind == KeySlotKind::kKeyFile && (in[1] | in[2] | in[3]) != 0)
    return Status::Error(EINVAL, "a key-file slot has no scrypt parameters");
  if (std::any_of(in.begin() + 4, in.begin() + kHeaderSize, [](uint8_t b) { return b != 0; }) ||
      std::any_of(in.begin() + kEndAt, in.end(), [](uint8_t b) { return b != 0; }))
    return Status::Error(EINVAL, "a key slot's reserved bytes are not zero");
  std::copy_n(in.begin() + kSaltAt, slot.salt.size(), slot.salt.begin());
  std::copy_n(in.begin() + kNonceAt, slot.nonce.size(), slot.nonce.begin());
  std::copy_n(in.begin() + kWrappedAt, slot.wrapped.size(), slot.wrapped.begin());
  std::copy_n(in.begin() + kTagAt, slot.tag.size(), slot.tag.begin());
  *out = slot;
  return Status::Ok();
}

}  // namespace dst
