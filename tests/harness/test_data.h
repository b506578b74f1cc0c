// Test data and file helpers: reproducible random bytes (fixed seed, so a
// failure can be replayed), whole-file and ranged reads, writes, comparisons
// and allocation queries. All throw std::runtime_error on I/O errors.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace dst::test {

using Bytes = std::vector<uint8_t>;

// The same (size, seed) always gives the same bytes.
Bytes RandomBytes(size_t size, uint64_t seed);

Bytes ReadFile(const std::string& path);
Bytes ReadFileRange(const std::string& path, uint64_t offset, size_t count);
void WriteFile(const std::string& path, std::span<const uint8_t> data);
// WriteFile for a secret key: the file is left readable and writable by its
// owner only (mode 0600), as the aggregator requires of key files.
void WriteKeyFile(const std::string& path, std::span<const uint8_t> data);
// Writes data at offset without truncating (creates the file if missing).
void WriteFileAt(const std::string& path, uint64_t offset, std::span<const uint8_t> data);
// Creates (or truncates) a sparse file of the given size: all hole.
void CreateSparseFile(const std::string& path, uint64_t size);

uint64_t FileSize(const std::string& path);
// Bytes actually allocated on disk (st_blocks * 512).
uint64_t AllocatedBytes(const std::string& path);

// Offset of the first differing byte, or nullopt if equal (a size mismatch
// differs at the shorter length).
std::optional<size_t> FirstDifference(std::span<const uint8_t> a, std::span<const uint8_t> b);
bool FilesEqual(const std::string& a, const std::string& b);
bool AllZero(std::span<const uint8_t> data);

}  // namespace dst::test
