// FileExport: one export backed by a local regular file or block device, and
// the operations of the NBD data path on it. Every operation returns a Status
// whose errno is what the client should see (ENOTSUP from Zero means "not
// fast": nbdkit then falls back to writing zeros unless FAST_ZERO was asked).
//
// Thread-safe: all I/O is positional (pread/pwrite/fallocate) on descriptors
// that never change after Open, so nbdkit's parallel thread model may call
// any operation from any thread at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "common/status.h"
#include "nbdkit-plugin/export_spec.h"

namespace dst::plugin {

class FileExport {
 public:
  // An extent reported by Extents(): hole and zero as NBD base:allocation.
  struct Extent {
    uint64_t offset;
    uint64_t length;
    bool hole;  // unallocated, and so reads as zeros
  };
  using ExtentSink = std::function<Status(const Extent&)>;

  // The mode of a backing file that Open creates (size= and a missing file):
  // owner read and write only, whatever the umask.
  static constexpr int kCreatedFileMode = 0600;

  // Opens (and with spec.size, creates or extends) the backing file.
  static Status Open(const ExportSpec& spec, std::unique_ptr<FileExport>* out);
  ~FileExport();
  FileExport(const FileExport&) = delete;
  FileExport& operator=(const FileExport&) = delete;

  const ExportSpec& spec() const { return spec_; }
  uint64_t size() const { return size_; }
  bool is_block_device() const { return is_block_device_; }
  // Extents are only meaningful where SEEK_DATA/SEEK_HOLE are: regular files.
  bool can_extents() const { return !is_block_device_; }

  Status Read(void* buf, uint32_t count, uint64_t offset) const;
  Status Write(const void* buf, uint32_t count, uint64_t offset, bool fua) const;
  Status Flush() const;
  Status Trim(uint32_t count, uint64_t offset, bool fua) const;
  Status Zero(uint32_t count, uint64_t offset, bool may_trim, bool fast_only, bool fua) const;
  Status Cache(uint32_t count, uint64_t offset) const;
  // Reports the allocation of [offset, offset+count) in order, at least one
  // extent, possibly reaching beyond count (NBD allows that).
  Status Extents(uint32_t count, uint64_t offset, const ExtentSink& sink) const;

 private:
  explicit FileExport(const ExportSpec& spec) : spec_(spec) {}
  Status OpenFile();
  Status OpenExisting(int flags);
  Status OpenOrCreate(int flags);
  Status ApplySize();
  bool UseDirect(const void* buf, uint32_t count, uint64_t offset) const;
  Status ReadDirect(void* buf, uint32_t count, uint64_t offset) const;
  Status WriteDirect(const void* buf, uint32_t count, uint64_t offset, bool fua) const;
  std::string Where(const char* op, uint64_t offset) const;

  ExportSpec spec_;
  int fd_ = -1;
  int direct_fd_ = -1;  // O_DIRECT descriptor, only with spec.direct
  uint64_t size_ = 0;
  bool is_block_device_ = false;
};

}  // namespace dst::plugin
