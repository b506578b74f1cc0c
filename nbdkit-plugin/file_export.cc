#include "nbdkit-plugin/file_export.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/units.h"

namespace dst::plugin {

namespace {

// O_DIRECT needs buffer, offset and length aligned to the logical block size;
// 4096 is safe for every device and filesystem we expect.
constexpr uint64_t kDirectAlignment = 4096;

bool IsUnsupported(int err) {
  return err == EOPNOTSUPP || err == ENOTSUP || err == ENODEV;
}

}  // namespace

std::string FileExport::Where(const char* op, uint64_t offset) const {
  return std::string(op) + " " + spec_.file + " at " + std::to_string(offset);
}

Status FileExport::Open(const ExportSpec& spec, std::unique_ptr<FileExport>* out) {
  std::unique_ptr<FileExport> exp(new FileExport(spec));
  DST_RETURN_IF_ERROR(exp->OpenFile());
  DST_RETURN_IF_ERROR(exp->ApplySize());
  *out = std::move(exp);
  return Status::Ok();
}

FileExport::~FileExport() {
  if (fd_ >= 0) close(fd_);
  if (direct_fd_ >= 0) close(direct_fd_);
}

Status FileExport::OpenFile() {
  const std::string where = "file=" + spec_.file;
  const int flags = O_CLOEXEC | (spec_.readonly ? O_RDONLY : O_RDWR);
  // Only a size= may bring a file into existence: a typo in a path must not
  // silently serve an empty new file.
  const bool may_create = spec_.size && !spec_.readonly;
  DST_RETURN_IF_ERROR(may_create ? OpenOrCreate(flags) : OpenExisting(flags));
  struct stat st;
  if (fstat(fd_, &st) < 0) return Status::FromErrno(errno, where + ": fstat");
  if (S_ISBLK(st.st_mode)) {
    is_block_device_ = true;
    if (ioctl(fd_, BLKGETSIZE64, &size_) < 0)
      return Status::FromErrno(errno, where + ": BLKGETSIZE64");
  } else if (S_ISREG(st.st_mode)) {
    size_ = static_cast<uint64_t>(st.st_size);
  } else {
    return Status::Invalid(where + ": not a regular file or block device");
  }
  if (spec_.direct) {
    direct_fd_ = open(spec_.file.c_str(), flags | O_DIRECT);
    if (direct_fd_ < 0) return Status::FromErrno(errno, where + ": open with O_DIRECT");
  }
  return Status::Ok();
}

Status FileExport::ApplySize() {
  if (!spec_.size || *spec_.size == size_) return Status::Ok();
  const std::string key = "size=" + spec_.size_text;
  if (*spec_.size < size_)
    return Status::Invalid(key + " is smaller than file=" + spec_.file + " (" + FormatSize(size_) +
                           ")");
  if (is_block_device_) return Status::Invalid(key + ": cannot resize block device " + spec_.file);
  if (spec_.readonly) return Status::Invalid(key + ": cannot extend read-only " + spec_.file);
  // ftruncate extends sparsely: nothing is allocated until it is written.
  if (ftruncate(fd_, static_cast<off_t>(*spec_.size)) < 0)
    return Status::FromErrno(errno, key + ": ftruncate " + spec_.file);
  size_ = *spec_.size;
  return Status::Ok();
}

Status FileExport::OpenExisting(int flags) {
  fd_ = open(spec_.file.c_str(), flags);
  if (fd_ < 0) return Status::FromErrno(errno, "file=" + spec_.file + ": open");
  return Status::Ok();
}

// A file the plugin creates holds a volume's data: only its owner may read
// it, whatever the umask (which can only take bits away from open's mode, so
// the mode is set again once the file exists). A file that was already there
// keeps the mode its owner gave it.
Status FileExport::OpenOrCreate(int flags) {
  const std::string where = "file=" + spec_.file;
  fd_ = open(spec_.file.c_str(), flags | O_CREAT | O_EXCL, kCreatedFileMode);
  if (fd_ < 0 && errno == EEXIST) return OpenExisting(flags);
  if (fd_ < 0) return Status::FromErrno(errno, where + ": open");
  if (fchmod(fd_, kCreatedFileMode) < 0) return Status::FromErrno(errno, where + ": fchmod");
  return Status::Ok();
}

bool FileExport::UseDirect(const void* buf, uint32_t count, uint64_t offset) const {
  (void)buf;
  return direct_fd_ >= 0 && offset % kDirectAlignment == 0 && count % kDirectAlignment == 0;
}

Status FileExport::Read(void* buf, uint32_t count, uint64_t offset) const {
  if (UseDirect(buf, count, offset)) return ReadDirect(buf, count, offset);
  auto* p = static_cast<char*>(buf);
  while (count > 0) {
    const ssize_t r = pread(fd_, p, count, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, Where("pread", offset));
    }
    // Reads past a file's end are never asked for (nbdkit checks bounds), so
    // a short read of 0 means the file shrank under us: that is an I/O error.
    if (r == 0) return Status::Error(EIO, Where("pread", offset) + ": unexpected end of file");
    p += r;
    count -= static_cast<uint32_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

Status FileExport::Write(const void* buf, uint32_t count, uint64_t offset, bool fua) const {
  if (UseDirect(buf, count, offset)) return WriteDirect(buf, count, offset, fua);
  const auto* p = static_cast<const char*>(buf);
  // RWF_DSYNC makes the FUA write durable in the same system call.
  const int rwf = fua ? RWF_DSYNC : 0;
  while (count > 0) {
    iovec iov{const_cast<char*>(p), count};
    const ssize_t r = pwritev2(fd_, &iov, 1, static_cast<off_t>(offset), rwf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, Where("pwrite", offset));
    }
    p += r;
    count -= static_cast<uint32_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

// O_DIRECT transfers go through an aligned bounce buffer, because nbdkit's
// buffers carry no alignment guarantee.
Status FileExport::ReadDirect(void* buf, uint32_t count, uint64_t offset) const {
  void* bounce = nullptr;
  if (posix_memalign(&bounce, kDirectAlignment, count) != 0)
    return Status::Error(ENOMEM, Where("pread", offset) + ": out of memory");
  const ssize_t r = pread(direct_fd_, bounce, count, static_cast<off_t>(offset));
  const int err = errno;
  if (r == static_cast<ssize_t>(count)) std::memcpy(buf, bounce, count);
  std::free(bounce);
  if (r < 0) return Status::FromErrno(err, Where("pread (O_DIRECT)", offset));
  if (r != static_cast<ssize_t>(count))
    return Status::Error(EIO, Where("pread (O_DIRECT)", offset) + ": short read");
  return Status::Ok();
}

Status FileExport::WriteDirect(const void* buf, uint32_t count, uint64_t offset, bool fua) const {
  void* bounce = nullptr;
  if (posix_memalign(&bounce, kDirectAlignment, count) != 0)
    return Status::Error(ENOMEM, Where("pwrite", offset) + ": out of memory");
  std::memcpy(bounce, buf, count);
  iovec iov{bounce, count};
  const ssize_t r = pwritev2(direct_fd_, &iov, 1, static_cast<off_t>(offset), fua ? RWF_DSYNC : 0);
  const int err = errno;
  std::free(bounce);
  if (r < 0) return Status::FromErrno(err, Where("pwrite (O_DIRECT)", offset));
  if (r != static_cast<ssize_t>(count))
    return Status::Error(EIO, Where("pwrite (O_DIRECT)", offset) + ": short write");
  return Status::Ok();
}

Status FileExport::Flush() const {
  if (fdatasync(fd_) < 0) return Status::FromErrno(errno, "fdatasync " + spec_.file);
  return Status::Ok();
}

Status FileExport::Trim(uint32_t count, uint64_t offset, bool fua) const {
  // Trim is advisory: where holes cannot be punched, keeping the data is correct.
  if (!is_block_device_ &&
      fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                count) < 0 &&
      !IsUnsupported(errno))
    return Status::FromErrno(errno, Where("fallocate punch hole", offset));
  return fua ? Flush() : Status::Ok();
}

Status FileExport::Zero(uint32_t count, uint64_t offset, bool may_trim, bool fast_only,
                        bool fua) const {
  (void)fast_only;  // every method tried here is fast; the slow one is nbdkit's fallback
  const auto off = static_cast<off_t>(offset);
  bool done = false;
  if (is_block_device_) {
    // BLKZEROOUT may be emulated by the kernel with slow writes, so it is
    // only used when the client accepts slow zeroing.
    uint64_t range[2] = {offset, count};
    if (!fast_only && ioctl(fd_, BLKZEROOUT, range) == 0) done = true;
  } else {
    if (may_trim && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, count) == 0)
      done = true;
    if (!done && fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, count) == 0)
      done = true;
    if (!done && !IsUnsupported(errno))
      return Status::FromErrno(errno, Where("fallocate zero range", offset));
  }
  if (!done) return Status::Error(ENOTSUP, Where("zero", offset) + ": no fast method");
  return fua ? Flush() : Status::Ok();
}

Status FileExport::Cache(uint32_t count, uint64_t offset) const {
  const int err = posix_fadvise(fd_, static_cast<off_t>(offset), count, POSIX_FADV_WILLNEED);
  if (err != 0) return Status::FromErrno(err, Where("posix_fadvise", offset));
  return Status::Ok();
}

Status FileExport::Extents(uint32_t count, uint64_t offset, const ExtentSink& sink) const {
  if (!can_extents()) return sink(Extent{offset, count, false});
  const uint64_t end = offset + count;
  while (offset < end) {
    // lseek's SEEK_DATA/SEEK_HOLE return values are all we use; the shared
    // file position they move is never read by positional I/O.
    off_t data = lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0 && errno != ENXIO) return Status::FromErrno(errno, Where("SEEK_DATA", offset));
    if (data < 0 || static_cast<uint64_t>(data) > offset) {
      // A hole up to the next data (ENXIO: hole to the end of the file).
      const uint64_t hole_end = data < 0 ? size_ : static_cast<uint64_t>(data);
      DST_RETURN_IF_ERROR(sink(Extent{offset, hole_end - offset, true}));
      offset = hole_end;
      continue;
    }
    off_t hole = lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) return Status::FromErrno(errno, Where("SEEK_HOLE", offset));
    DST_RETURN_IF_ERROR(sink(Extent{offset, static_cast<uint64_t>(hole) - offset, false}));
    offset = static_cast<uint64_t>(hole);
  }
  return Status::Ok();
}

}  // namespace dst::plugin
