#include "common/checksum.h"

#include <algorithm>
#include <utility>

#include <cryptopp/blake2.h>
#include <cryptopp/crc.h>
#include <isa-l/crc.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dst {
namespace {

constexpr size_t kBlake2bDigestSize = 32;

struct AlgorithmInfo {
  ChecksumAlgorithm algorithm;
  const char* name;
  size_t size;
};

constexpr AlgorithmInfo kAlgorithms[] = {
    {ChecksumAlgorithm::kCrc32c, "crc32c", CryptoPP::CRC32C::DIGESTSIZE},
    {ChecksumAlgorithm::kBlake2b, "blake2b", kBlake2bDigestSize},
    {ChecksumAlgorithm::kBlake2bKeyed, "blake2b-keyed", kBlake2bDigestSize},
};

const AlgorithmInfo* Find(ChecksumAlgorithm algorithm) {
  for (const AlgorithmInfo& info : kAlgorithms) {
    if (info.algorithm == algorithm) return &info;
  }
  return nullptr;
}

Checksummer::Result Refuse(std::string message) {
  return Checksummer::Result{Status::Invalid(std::move(message)), std::nullopt};
}

// Only the keyed variant takes a key; silently ignoring one would give a false sense of a MAC.
Status CheckKey(ChecksumAlgorithm algorithm, size_t key_size) {
  const std::string prefix = std::string("checksum algorithm ") + ChecksumAlgorithmName(algorithm);
  if (algorithm != ChecksumAlgorithm::kBlake2bKeyed) {
    return key_size == 0 ? Status::Ok() : Status::Invalid(prefix + " takes no key");
  }
  if (key_size >= kMinChecksumKeySize && key_size <= kMaxChecksumKeySize) return Status::Ok();
  return Status::Invalid(prefix + " needs a key of " + std::to_string(kMinChecksumKeySize) + ".." +
                         std::to_string(kMaxChecksumKeySize) + " bytes, got " +
                         std::to_string(key_size));
}

// CRC32C through ISA-L, which folds several streams of the CPU's CRC
// instruction in parallel: about 7x the speed of Crypto++'s CRC32C (one 4-byte
// instruction at a time), which on the data path cost a third of a 1 MiB read.
// Wrapped as a Crypto++ hash so the rest of this file treats it like the
// others; like Crypto++'s CRC32C it emits the CRC least significant byte first.
#if defined(__x86_64__)
// ISA-L's crc32_iscsi (AVX2 or AVX-512 code where the CPU has it) returns with the upper halves of
// the vector registers dirty. Every legacy-SSE instruction that runs next on the thread then pays
// a transition penalty: Crypto++'s BLAKE2b ran at 347 MiB/s after a CRC instead of 584 (bench/
// cipher_speed, docs/benchmarks.md). vzeroupper clears that state; only where AVX exists.
__attribute__((target("avx"))) void ClearUpperVectorState() {
  _mm256_zeroupper();
}
const bool kHasAvx = __builtin_cpu_supports("avx");
void AfterVectorCode() {
  if (kHasAvx) ClearUpperVectorState();
}
#else
void AfterVectorCode() {}
#endif

class IsalCrc32c final : public CryptoPP::HashTransformation {
 public:
  void Update(const CryptoPP::byte* input, size_t length) override {
    // ISA-L takes an int length; members' blocks are far smaller, but a
    // caller may hash anything.
    while (length > 0) {
      const size_t piece = std::min<size_t>(length, 1u << 30);
      crc_ = crc32_iscsi(const_cast<CryptoPP::byte*>(input), static_cast<int>(piece), crc_);
      input += piece;
      length -= piece;
    }
    AfterVectorCode();
  }
  unsigned int DigestSize() const override { return 4; }
  void TruncatedFinal(CryptoPP::byte* digest, size_t size) override {
    const uint32_t value = ~crc_;
    for (size_t i = 0; i < size && i < 4; ++i)
      digest[i] = static_cast<CryptoPP::byte>(value >> (8 * i));
    Restart();
  }
  void Restart() override { crc_ = 0xFFFFFFFF; }
  std::string AlgorithmName() const override { return "CRC32C"; }

 private:
  uint32_t crc_ = 0xFFFFFFFF;
};

std::unique_ptr<CryptoPP::HashTransformation> NewHash(ChecksumAlgorithm algorithm,
                                                      std::span<const uint8_t> key) {
  constexpr unsigned kSize = kBlake2bDigestSize;
  switch (algorithm) {
    case ChecksumAlgorithm::kCrc32c:
      return std::make_unique<IsalCrc32c>();
    case ChecksumAlgorithm::kBlake2b:
      return std::make_unique<CryptoPP::BLAKE2b>(/*treeMode=*/false, kSize);
    case ChecksumAlgorithm::kBlake2bKeyed:
      return std::make_unique<CryptoPP::BLAKE2b>(key.data(), key.size(), /*salt=*/nullptr, 0,
                                                 /*personalization=*/nullptr, 0,
                                                 /*treeMode=*/false, kSize);
  }
  return nullptr;
}

}  // namespace

const char* ChecksumAlgorithmName(ChecksumAlgorithm algorithm) {
  const AlgorithmInfo* info = Find(algorithm);
  return info ? info->name : "unknown";
}

std::optional<ChecksumAlgorithm> ParseChecksumAlgorithm(std::string_view name) {
  for (const AlgorithmInfo& info : kAlgorithms) {
    if (name == info.name) return info.algorithm;
  }
  return std::nullopt;
}

std::optional<ChecksumAlgorithm> ChecksumAlgorithmFromCode(uint8_t code) {
  const auto algorithm = static_cast<ChecksumAlgorithm>(code);
  if (Find(algorithm) == nullptr) return std::nullopt;
  return algorithm;
}

size_t ChecksumSize(ChecksumAlgorithm algorithm) {
  const AlgorithmInfo* info = Find(algorithm);
  return info ? info->size : 0;
}

bool Digest::IsZero() const {
  return std::all_of(bytes.begin(), bytes.begin() + length, [](uint8_t b) { return b == 0; });
}

std::string Digest::ToHex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(size() * 2);
  for (uint8_t b : span()) {
    hex += kHex[b >> 4];
    hex += kHex[b & 0xf];
  }
  return hex;
}

Checksummer::Result Checksummer::Create(ChecksumAlgorithm algorithm, std::span<const uint8_t> key) {
  if (Find(algorithm) == nullptr) {
    return Refuse("unknown checksum algorithm " + std::to_string(static_cast<int>(algorithm)));
  }
  if (Status status = CheckKey(algorithm, key.size()); !status.ok()) {
    return Result{std::move(status), std::nullopt};
  }
  return Result{Status::Ok(), Checksummer(algorithm, NewHash(algorithm, key))};
}

Checksummer::Checksummer(ChecksumAlgorithm algorithm,
                         std::unique_ptr<CryptoPP::HashTransformation> hash)
    : algorithm_(algorithm), hash_(std::move(hash)) {}

Checksummer::Checksummer(Checksummer&& other) noexcept = default;
Checksummer& Checksummer::operator=(Checksummer&& other) noexcept = default;
Checksummer::~Checksummer() = default;

void Checksummer::Update(std::span<const uint8_t> data) {
  // An empty span may carry a null pointer, which must not reach memcpy inside Crypto++.
  if (!data.empty()) hash_->Update(data.data(), data.size());
}

Digest Checksummer::Final() {
  Digest digest;
  digest.length = static_cast<uint8_t>(size());
  hash_->Final(digest.bytes.data());  // also restarts the hash, keeping the key
  if (algorithm_ == ChecksumAlgorithm::kCrc32c) {
    // Crypto++ emits the CRC least significant byte first on every platform; the stored form is
    // big-endian so that the entry reads like the conventional check value.
    std::reverse(digest.bytes.begin(), digest.bytes.begin() + digest.length);
  }
  return digest;
}

void Checksummer::Reset() {
  hash_->Restart();
}

Digest Checksummer::Compute(std::span<const uint8_t> data) {
  Reset();
  Update(data);
  return Final();
}

Digest BlockChecksum(Checksummer& checksummer, std::span<const uint8_t, 16> volume_uuid,
                     uint64_t block_address, std::span<const uint8_t> data) {
  std::array<uint8_t, 8> address;
  for (size_t i = 0; i < address.size(); ++i) {
    address[i] = static_cast<uint8_t>(block_address >> (56 - 8 * i));
  }
  checksummer.Reset();
  checksummer.Update(volume_uuid);
  checksummer.Update(address);
  checksummer.Update(data);
  Digest digest = checksummer.Final();
  // All zeros is the table's "never written" marker; keep real checksums distinguishable.
  if (digest.IsZero()) digest.bytes[digest.length - 1] = 1;
  return digest;
}

}  // namespace dst
