#include "aggregator/integrity/table_anchor.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/member_format.h"
#include "common/nbd_protocol.h"

namespace dst::integrity {

namespace {

using nbd::LoadBE64;
using nbd::StoreBE32;
using nbd::StoreBE64;

constexpr char kAnchorMagic[8] = {'D', 'S', 'T', 'T', 'G', 'E', 'N', '1'};
constexpr uint32_t kAnchorVersion = 1;
constexpr size_t kHeaderSize = kMetadataPageSize;
constexpr size_t kTableCountAt = 12;
constexpr size_t kUuidAt = 16;
constexpr size_t kPageCountsAt = 32;

std::vector<uint8_t> Header(const std::vector<uint64_t>& pages, const Uuid& uuid) {
  std::vector<uint8_t> h(kHeaderSize, 0);
  std::memcpy(h.data(), kAnchorMagic, sizeof kAnchorMagic);
  StoreBE32(h.data() + 8, kAnchorVersion);
  StoreBE32(h.data() + kTableCountAt, static_cast<uint32_t>(pages.size()));
  std::copy(uuid.begin(), uuid.end(), h.begin() + kUuidAt);
  for (size_t t = 0; t < pages.size(); ++t)
    StoreBE64(h.data() + kPageCountsAt + 8 * t, pages[t]);
  return h;
}

Status Errno(const std::string& what, const std::string& path) {
  const int err = errno;
  return Status::Error(err, what + " " + path + ": " + std::strerror(err));
}

Status WriteAll(int fd, const uint8_t* data, size_t size, off_t at, const std::string& path) {
  while (size > 0) {
    const ssize_t n = pwrite(fd, data, size, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("write", path);
    data += n;
    size -= static_cast<size_t>(n);
    at += n;
  }
  return Status::Ok();
}

Status ReadAll(int fd, uint8_t* data, size_t size, off_t at, const std::string& path) {
  while (size > 0) {
    const ssize_t n = pread(fd, data, size, at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("read", path);
    if (n == 0) return Status::Invalid(path + " is shorter than its header says");
    data += n;
    size -= static_cast<size_t>(n);
    at += n;
  }
  return Status::Ok();
}

}  // namespace

TableAnchor::TableAnchor(std::vector<uint64_t> pages) : pages_(std::move(pages)) {
  size_t total = 0;
  for (uint64_t p : pages_) {
    first_.push_back(total);
    total += p;
  }
  generations_.assign(total, 0);
}

TableAnchor::~TableAnchor() {
  if (fd_ >= 0) close(fd_);
}

Status TableAnchor::OpenFile(const std::string& dir, const Uuid& volume_uuid) {
  const std::string path = dir + "/" + FormatUuid(volume_uuid) + ".table-generations";
  const std::vector<uint8_t> header = Header(pages_, volume_uuid);
  const size_t body = generations_.size() * 8;
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) return Errno("open", path);
  if (fd < 0) {
    // New: all zero, durable (the file and its name) before any anchor is trusted to it.
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return Errno("create", path);
    Status s = WriteAll(fd, header.data(), header.size(), 0, path);
    if (s.ok() && ftruncate(fd, static_cast<off_t>(kHeaderSize + body)) != 0)
      s = Errno("extend", path);
    if (s.ok() && fsync(fd) != 0) s = Errno("sync", path);
    const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s.ok() && (dir_fd < 0 || fsync(dir_fd) != 0)) s = Errno("sync directory of", path);
    if (dir_fd >= 0) close(dir_fd);
    if (!s.ok()) {
      close(fd);
      return s;
    }
    fd_ = fd;
    path_ = path;
    return Status::Ok();
  }
  std::vector<uint8_t> found(kHeaderSize);
  Status s = ReadAll(fd, found.data(), found.size(), 0, path);
  if (s.ok() && found != header)
    s = Status::Invalid(path + " records the table generations of another volume or shape");
  std::vector<uint8_t> bytes(body);
  if (s.ok()) s = ReadAll(fd, bytes.data(), bytes.size(), kHeaderSize, path);
  if (!s.ok()) {
    close(fd);
    return s;
  }
  for (size_t i = 0; i < generations_.size(); ++i)
    generations_[i] = LoadBE64(bytes.data() + 8 * i);
  fd_ = fd;
  path_ = path;
  return Status::Ok();
}

void TableAnchor::Raise(uint32_t table, uint64_t page, uint64_t generation) {
  const size_t i = Index(table, page);
  if (generation <= generations_[i]) return;
  generations_[i] = generation;
  unsynced_.insert(i);
}

Status TableAnchor::Sync() {
  if (fd_ < 0 || unsynced_.empty()) {
    unsynced_.clear();
    return Status::Ok();
  }
  for (size_t i : unsynced_) {
    uint8_t bytes[8];
    StoreBE64(bytes, generations_[i]);
    DST_RETURN_IF_ERROR(
        WriteAll(fd_, bytes, sizeof bytes, static_cast<off_t>(kHeaderSize + 8 * i), path_));
  }
  if (fdatasync(fd_) != 0) return Errno("sync", path_);
  unsynced_.clear();
  return Status::Ok();
}

}  // namespace dst::integrity
