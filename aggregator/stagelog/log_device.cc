#include "aggregator/stagelog/log_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace dst::stagelog {

namespace {

std::string Where(const std::string& path, uint64_t offset, uint64_t length) {
  return path + " at " + std::to_string(offset) + " (" + std::to_string(length) + " bytes)";
}

}  // namespace

// ---------------------------------------------------------------------------
// FileLogDevice.

Status FileLogDevice::Open(const std::string& path, uint64_t create_size,
                           std::unique_ptr<FileLogDevice>* out) {
  const int flags = O_RDWR | O_CLOEXEC | (create_size > 0 ? O_CREAT : 0);
  const int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) return Status::FromErrno(errno, "open staging log " + path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "stat staging log " + path);
  }
  uint64_t size = 0;
  if (S_ISBLK(st.st_mode)) {
    const off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) {
      const int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "size of staging log device " + path);
    }
    size = static_cast<uint64_t>(end);
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
    if (size == 0 && create_size > 0) {
      if (::ftruncate(fd, static_cast<off_t>(create_size)) != 0) {
        const int err = errno;
        ::close(fd);
        return Status::FromErrno(err, "set the size of staging log " + path);
      }
      size = create_size;
    }
  } else {
    ::close(fd);
    return Status::Invalid("staging log " + path + " is neither a file nor a block device");
  }
  out->reset(new FileLogDevice(path, fd, size));
  return Status::Ok();
}

FileLogDevice::~FileLogDevice() {
  ::close(fd_);
}

Status FileLogDevice::Read(uint64_t offset, std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "pread " + Where(path_, offset, out.size()));
    if (n == 0) return Status::Error(EIO, "pread " + Where(path_, offset, out.size()) + ": short");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FileLogDevice::Write(uint64_t offset, std::span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "pwrite " + Where(path_, offset, data.size()));
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FileLogDevice::Sync() {
  if (::fdatasync(fd_) != 0) return Status::FromErrno(errno, "fdatasync " + path_);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// FakeLogDevice.

Status FakeLogDevice::CheckRange(const char* op, uint64_t offset, uint64_t length) const {
  if (offset > size() || length > size() - offset) {
    return Status::Error(EIO, std::string(op) + " past the end of the fake log device at " +
                                  std::to_string(offset) + " (" + std::to_string(length) +
                                  " bytes)");
  }
  return Status::Ok();
}

Status FakeLogDevice::Read(uint64_t offset, std::span<uint8_t> out) {
  DST_RETURN_IF_ERROR(CheckRange("read", offset, out.size()));
  std::copy_n(volatile_.begin() + static_cast<ptrdiff_t>(offset), out.size(), out.begin());
  return Status::Ok();
}

Status FakeLogDevice::Write(uint64_t offset, std::span<const uint8_t> data) {
  DST_RETURN_IF_ERROR(CheckRange("write", offset, data.size()));
  if (fail_write_ != 0) {
    const int err = std::exchange(fail_write_, 0);
    return Status::FromErrno(err, "write to the fake log device");
  }
  ++writes_;
  std::copy(data.begin(), data.end(), volatile_.begin() + static_cast<ptrdiff_t>(offset));
  pending_.push_back({offset, {data.begin(), data.end()}});
  return Status::Ok();
}

Status FakeLogDevice::Sync() {
  if (fail_sync_ != 0) {
    const int err = std::exchange(fail_sync_, 0);
    return Status::FromErrno(err, "sync of the fake log device");
  }
  ++syncs_;
  durable_ = volatile_;
  pending_.clear();
  return Status::Ok();
}

void FakeLogDevice::Crash(CrashMode mode, std::mt19937_64* rng) {
  for (const PendingWrite& w : pending_) {
    auto apply = [&](uint64_t from, uint64_t to) {
      std::copy(w.data.begin() + static_cast<ptrdiff_t>(from),
                w.data.begin() + static_cast<ptrdiff_t>(to),
                durable_.begin() + static_cast<ptrdiff_t>(w.offset + from));
    };
    if (mode == CrashMode::kKeepUnsynced) apply(0, w.data.size());
    if (mode != CrashMode::kRandom) continue;
    const uint64_t choice = (*rng)() % 3;
    if (choice == 0) continue;  // lost
    if (choice == 1) {
      apply(0, w.data.size());
      continue;
    }
    for (uint64_t s = 0; s < w.data.size(); s += kSectorSize) {  // torn
      if ((*rng)() % 2 == 0) apply(s, std::min<uint64_t>(s + kSectorSize, w.data.size()));
    }
  }
  pending_.clear();
  volatile_ = durable_;
}

}  // namespace dst::stagelog
