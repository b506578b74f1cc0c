#include "tests/harness/test_data.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

namespace dst::test {
namespace {

std::runtime_error IoError(const std::string& what, const std::string& path) {
  return std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

// Owns a file descriptor.
class Fd {
 public:
  Fd(const std::string& path, int flags) : fd_(::open(path.c_str(), flags | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw IoError("open", path);
  }
  ~Fd() { ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct stat StatOrThrow(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw IoError("stat", path);
  return st;
}

}  // namespace

Bytes RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes out(size);
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return out;
}

Bytes ReadFileRange(const std::string& path, uint64_t offset, size_t count) {
  Fd fd(path, O_RDONLY);
  Bytes out(count);
  size_t done = 0;
  while (done < count) {
    const ssize_t n = ::pread(fd.get(), out.data() + done, count - done, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError("pread", path);
    if (n == 0) break;  // end of file: return what exists
    done += n;
  }
  out.resize(done);
  return out;
}

Bytes ReadFile(const std::string& path) {
  return ReadFileRange(path, 0, FileSize(path));
}

void WriteFileAt(const std::string& path, uint64_t offset, std::span<const uint8_t> data) {
  Fd fd(path, O_WRONLY | O_CREAT);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd.get(), data.data() + done, data.size() - done, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError("pwrite", path);
    done += n;
  }
}

void WriteFile(const std::string& path, std::span<const uint8_t> data) {
  { Fd truncate(path, O_WRONLY | O_CREAT | O_TRUNC); }
  WriteFileAt(path, 0, data);
}

void WriteKeyFile(const std::string& path, std::span<const uint8_t> data) {
  WriteFile(path, data);
  if (::chmod(path.c_str(), 0600) != 0) throw IoError("chmod", path);
}

void CreateSparseFile(const std::string& path, uint64_t size) {
  Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw IoError("ftruncate", path);
}

uint64_t FileSize(const std::string& path) {
  return StatOrThrow(path).st_size;
}

uint64_t AllocatedBytes(const std::string& path) {
  return static_cast<uint64_t>(StatOrThrow(path).st_blocks) * 512;
}

std::optional<size_t> FirstDifference(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  const size_t n = std::min(a.size(), b.size());
  const auto mismatch = std::mismatch(a.begin(), a.begin() + n, b.begin());
  if (mismatch.first != a.begin() + n) return mismatch.first - a.begin();
  if (a.size() != b.size()) return n;
  return std::nullopt;
}

bool FilesEqual(const std::string& a, const std::string& b) {
  return !FirstDifference(ReadFile(a), ReadFile(b));
}

bool AllZero(std::span<const uint8_t> data) {
  return std::all_of(data.begin(), data.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace dst::test
