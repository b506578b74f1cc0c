// The staging log's storage seam: positioned reads and writes and a sync on one file or block
// device. FileLogDevice is the real one (pread/pwrite/fdatasync); FakeLogDevice keeps the bytes in
// memory for tests and models a crash: writes since the last Sync may be lost, kept or torn.
//
// Threading: a LogDevice is used by one thread at a time (the log writer's owner); the
// implementations here do no locking.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace dst::stagelog {

class LogDevice {
 public:
  virtual ~LogDevice() = default;

  virtual uint64_t size() const = 0;
  // Exactly out.size() bytes at `offset`, inside size(); a short read is an error (EIO).
  virtual Status Read(uint64_t offset, std::span<uint8_t> out) = 0;
  // Not durable until Sync() returns OK.
  virtual Status Write(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Makes every completed Write durable.
  virtual Status Sync() = 0;
};

// A regular file or a block device. Open() creates a missing file with `create_size` bytes
// (0: the file must exist); a block device's size is its own.
class FileLogDevice final : public LogDevice {
 public:
  static Status Open(const std::string& path, uint64_t create_size,
                     std::unique_ptr<FileLogDevice>* out);
  ~FileLogDevice() override;
  FileLogDevice(const FileLogDevice&) = delete;
  FileLogDevice& operator=(const FileLogDevice&) = delete;

  uint64_t size() const override { return size_; }
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Sync() override;

 private:
  FileLogDevice(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}

  std::string path_;
  int fd_;
  uint64_t size_;
};

// In memory. Reads see every write; Crash() keeps what was synced plus, for each write since the
// last sync, all, none or a random subset of its 512-byte sectors, as a power cut can leave them.
class FakeLogDevice final : public LogDevice {
 public:
  static constexpr uint64_t kSectorSize = 512;

  explicit FakeLogDevice(uint64_t size) : volatile_(size), durable_(size) {}

  uint64_t size() const override { return volatile_.size(); }
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Sync() override;

  // The next Write or Sync fails with `err` (EIO by default) and changes nothing.
  void FailNextWrite(int err = 5) { fail_write_ = err; }
  void FailNextSync(int err = 5) { fail_sync_ = err; }

  enum class CrashMode {
    kLoseUnsynced,  // every write since the last sync is lost
    kKeepUnsynced,  // every one survives
    kRandom,        // each is kept, lost or torn (a random subset of its sectors), at random
  };
  // A power cut: afterwards the device holds what survived, and reads see it.
  void Crash(CrashMode mode, std::mt19937_64* rng = nullptr);

  uint64_t writes() const { return writes_; }
  uint64_t syncs() const { return syncs_; }
  size_t unsynced_writes() const { return pending_.size(); }

 private:
  struct PendingWrite {
    uint64_t offset;
    std::vector<uint8_t> data;
  };
  Status CheckRange(const char* op, uint64_t offset, uint64_t length) const;

  std::vector<uint8_t> volatile_;  // what reads see
  std::vector<uint8_t> durable_;   // what a crash keeps, before the pending writes
  std::vector<PendingWrite> pending_;
  int fail_write_ = 0;
  int fail_sync_ = 0;
  uint64_t writes_ = 0;
  uint64_t syncs_ = 0;
};

}  // namespace dst::stagelog
