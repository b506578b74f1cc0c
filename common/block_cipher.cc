#include "common/block_cipher.h"

#include <algorithm>
#include <cerrno>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <cryptopp/aes.h>
#include <cryptopp/blake2.h>
#include <cryptopp/secblock.h>
#include <cryptopp/xts.h>

namespace dst {

namespace {

constexpr std::string_view kXtsLabel = "dst xts key";
constexpr std::string_view kMacLabel = "dst mac key";
constexpr std::string_view kCheckLabel = "dst key check";

// BLAKE2b with `size` bytes of output, keyed with `key`, over `parts` in order.
CryptoPP::SecByteBlock Derive(std::span<const uint8_t> key, size_t size,
                              std::initializer_list<std::span<const uint8_t>> parts) {
  CryptoPP::BLAKE2b hash(key.data(), key.size(), nullptr, 0, nullptr, 0, false,
                         static_cast<unsigned int>(size));
  for (std::span<const uint8_t> part : parts)
    hash.Update(part.data(), part.size());
  CryptoPP::SecByteBlock out(size);
  hash.Final(out.data());
  return out;
}

// IEEE 1619's data unit sequence number: the block number, little-endian in 16 bytes.
std::array<uint8_t, kCipherUnit> Tweak(uint64_t block) {
  std::array<uint8_t, kCipherUnit> tweak{};
  for (size_t i = 0; i < 8; ++i)
    tweak[i] = static_cast<uint8_t>(block >> (8 * i));
  return tweak;
}

}  // namespace

struct Xts::Modes {
  CryptoPP::XTS_Mode<CryptoPP::AES>::Encryption encrypt;
  CryptoPP::XTS_Mode<CryptoPP::AES>::Decryption decrypt;
};

Xts::Xts(std::span<const uint8_t, kXtsKeySize> key) : modes_(std::make_unique<Modes>()) {
  const std::array<uint8_t, kCipherUnit> zero{};
  modes_->encrypt.SetKeyWithIV(key.data(), key.size(), zero.data(), zero.size());
  modes_->decrypt.SetKeyWithIV(key.data(), key.size(), zero.data(), zero.size());
}

Xts::~Xts() = default;

Status Xts::Process(bool encrypt, uint64_t unit, std::span<const uint8_t> in,
                    std::span<uint8_t> out) {
  if (in.size() != out.size() || in.size() < kCipherUnit || in.size() % kCipherUnit != 0)
    return Status::Error(EINVAL, "a cipher block is a multiple of " + std::to_string(kCipherUnit) +
                                     " bytes, in and out alike (" + std::to_string(in.size()) +
                                     " in, " + std::to_string(out.size()) + " out)");
  const std::array<uint8_t, kCipherUnit> tweak = Tweak(unit);
  CryptoPP::XTS_ModeBase& mode = encrypt ? static_cast<CryptoPP::XTS_ModeBase&>(modes_->encrypt)
                                         : static_cast<CryptoPP::XTS_ModeBase&>(modes_->decrypt);
  mode.Resynchronize(tweak.data(), static_cast<int>(tweak.size()));
  mode.ProcessData(out.data(), in.data(), in.size());
  return Status::Ok();
}

Status Xts::Encrypt(uint64_t unit, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return Process(true, unit, in, out);
}

Status Xts::Decrypt(uint64_t unit, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return Process(false, unit, in, out);
}

struct BlockCipher::Keys {
  CryptoPP::SecByteBlock master;  // for Check() only
  std::optional<Xts> xts;
  std::optional<Checksummer> mac;
};

Status BlockCipher::Create(std::span<const uint8_t> master_key, std::unique_ptr<BlockCipher>* out) {
  if (master_key.size() != kMasterKeySize)
    return Status::Error(EINVAL, "an encryption master key has " + std::to_string(kMasterKeySize) +
                                     " bytes, not " + std::to_string(master_key.size()));
  auto keys = std::make_unique<Keys>();
  keys->master.Assign(master_key.data(), master_key.size());
  const CryptoPP::SecByteBlock xts = Derive(master_key, kXtsKeySize, {LabelBytes(kXtsLabel)});
  keys->xts.emplace(std::span<const uint8_t, kXtsKeySize>(xts.data(), kXtsKeySize));
  const CryptoPP::SecByteBlock mac = MacKey(master_key);
  Checksummer::Result made =
      Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, {mac.data(), mac.size()});
  if (!made.ok()) return made.status;
  keys->mac = std::move(made.checksummer);
  *out = std::unique_ptr<BlockCipher>(new BlockCipher(std::move(keys)));
  return Status::Ok();
}

BlockCipher::BlockCipher(std::unique_ptr<Keys> keys) : keys_(std::move(keys)) {}
BlockCipher::~BlockCipher() = default;

Status BlockCipher::Encrypt(uint64_t block, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return keys_->xts->Encrypt(block, in, out);
}

Status BlockCipher::Decrypt(uint64_t block, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return keys_->xts->Decrypt(block, in, out);
}

Digest BlockCipher::Mac(std::span<const uint8_t, 16> volume_uuid, uint64_t block,
                        std::span<const uint8_t> ciphertext) {
  return BlockChecksum(*keys_->mac, volume_uuid, block, ciphertext);
}

KeyCheck BlockCipher::Check(std::span<const uint8_t, 16> volume_uuid) const {
  const CryptoPP::SecByteBlock check = Derive({keys_->master.data(), keys_->master.size()}, 32,
                                              {LabelBytes(kCheckLabel), volume_uuid});
  KeyCheck out;
  std::copy(check.begin(), check.end(), out.begin());
  return out;
}

std::span<const uint8_t> BlockCipher::master_key() const {
  return {keys_->master.data(), keys_->master.size()};
}

CryptoPP::SecByteBlock BlockCipher::MacKey(std::span<const uint8_t> master_key) {
  return Derive(master_key, 32, {LabelBytes(kMacLabel)});
}

}  // namespace dst
