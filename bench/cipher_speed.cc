// cipher_speed: how fast one core runs the block format of encrypted volumes
// (common/block_cipher.h) on 4 KiB blocks: AES-256-XTS each way and the MAC
// (keyed BLAKE2b-256 over the ciphertext), next to the checksums volumes use
// today. Prints MiB/s and TSC cycles per byte for each. See bench/README.md.
// The BLAKE2b checksum runs right after crc32c on purpose: ISA-L's vector
// code once left the CPU in a state that halved it (common/checksum.cc).
//
//   build-bench/bench/cipher_speed [MiB per measurement, default 256]
#include <x86intrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "common/block_cipher.h"
#include "common/checksum.h"

namespace {

constexpr size_t kBlock = 4096;

// Runs `one(block)` over `mib` MiB of 4 KiB blocks; prints its speed.
void Measure(const char* what, size_t mib, const std::function<void(uint64_t)>& one) {
  const uint64_t blocks = mib * 1024 * 1024 / kBlock;
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t c0 = __rdtsc();
  for (uint64_t b = 0; b < blocks; ++b)
    one(b);
  const uint64_t cycles = __rdtsc() - c0;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double bytes = static_cast<double>(blocks * kBlock);
  std::printf("| %s | %.0f | %.2f |\n", what, bytes / seconds / (1024 * 1024),
              static_cast<double>(cycles) / bytes);
}

}  // namespace

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 256;
  std::vector<uint8_t> master(dst::kMasterKeySize, 0x42);
  std::unique_ptr<dst::BlockCipher> cipher;
  if (!dst::BlockCipher::Create(master, &cipher).ok()) return 1;
  std::vector<uint8_t> plain(kBlock, 0x5a), out(kBlock);
  const std::array<uint8_t, 16> uuid{};
  auto crc = dst::Checksummer::Create(dst::ChecksumAlgorithm::kCrc32c);
  auto blake = dst::Checksummer::Create(dst::ChecksumAlgorithm::kBlake2b);
  std::printf("| what (4 KiB blocks, one core) | MiB/s | TSC cycles per byte |\n|---|---|---|\n");
  Measure("AES-256-XTS encrypt", mib, [&](uint64_t b) { (void)cipher->Encrypt(b, plain, out); });
  Measure("AES-256-XTS decrypt", mib, [&](uint64_t b) { (void)cipher->Decrypt(b, out, plain); });
  Measure("MAC (keyed BLAKE2b-256)", mib, [&](uint64_t b) { (void)cipher->Mac(uuid, b, out); });
  Measure("checksum crc32c", mib,
          [&](uint64_t b) { (void)dst::BlockChecksum(*crc.checksummer, uuid, b, out); });
  Measure("checksum BLAKE2b-256", mib,
          [&](uint64_t b) { (void)dst::BlockChecksum(*blake.checksummer, uuid, b, out); });
  return 0;
}
