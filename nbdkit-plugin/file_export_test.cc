#include "nbdkit-plugin/file_export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

using dst::Status;
using dst::plugin::ExportSpec;
using dst::plugin::FileExport;

namespace {

class TempPath {
 public:
  TempPath() {
    char tmpl[] = "/tmp/dst-export-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/disk.img";
  }
  ~TempPath() {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

std::unique_ptr<FileExport> OpenOrFail(ExportSpec spec) {
  std::unique_ptr<FileExport> exp;
  const Status s = FileExport::Open(spec, &exp);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return exp;
}

ExportSpec Spec(const std::string& path, uint64_t size, bool direct = false) {
  ExportSpec spec;
  spec.name = "t";
  spec.file = path;
  spec.size = size;
  spec.size_text = std::to_string(size);
  spec.direct = direct;
  return spec;
}

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v)
    b = static_cast<uint8_t>(rng());
  return v;
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace

TEST_CASE("size= creates a sparse file and data round trips") {
  TempPath tmp;
  auto exp = OpenOrFail(Spec(tmp.path(), 1 << 20));
  CHECK(exp->size() == 1u << 20);
  CHECK(AllocatedBytes(tmp.path()) == 0);
  const auto data = RandomBytes(12345, 1);
  REQUIRE(exp->Write(data.data(), data.size(), 777, /*fua=*/true).ok());
  std::vector<uint8_t> back(data.size());
  REQUIRE(exp->Read(back.data(), back.size(), 777).ok());
  CHECK(back == data);
  CHECK(exp->Flush().ok());
}

TEST_CASE("O_DIRECT serves aligned and unaligned requests alike") {
  TempPath tmp;
  auto exp = OpenOrFail(Spec(tmp.path(), 1 << 20, /*direct=*/true));
  const auto data = RandomBytes(8192, 2);
  REQUIRE(exp->Write(data.data(), data.size(), 4096, false).ok());  // direct path
  std::vector<uint8_t> back(100);
  REQUIRE(exp->Read(back.data(), back.size(), 4096 + 13).ok());  // buffered path
  CHECK(std::equal(back.begin(), back.end(), data.begin() + 13));
  std::vector<uint8_t> all(8192);
  REQUIRE(exp->Read(all.data(), all.size(), 4096).ok());
  CHECK(all == data);
}

TEST_CASE("trim punches a hole, zero reads back zeros") {
  TempPath tmp;
  auto exp = OpenOrFail(Spec(tmp.path(), 1 << 20));
  const auto data = RandomBytes(256 << 10, 3);
  REQUIRE(exp->Write(data.data(), data.size(), 0, false).ok());
  const uint64_t before = AllocatedBytes(tmp.path());
  REQUIRE(exp->Trim(128 << 10, 0, false).ok());
  CHECK(AllocatedBytes(tmp.path()) < before);
  std::vector<uint8_t> back(128 << 10, 0xff);
  REQUIRE(exp->Read(back.data(), back.size(), 0).ok());
  CHECK(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; }));

  const Status zero = exp->Zero(4096, 200 << 10, /*may_trim=*/false, /*fast_only=*/true, false);
  // Either done fast, or honestly refused as not fast: never slow, never wrong.
  CHECK((zero.ok() || zero.err() == ENOTSUP));
  if (zero.ok()) {
    std::vector<uint8_t> z(4096, 0xff);
    REQUIRE(exp->Read(z.data(), z.size(), 200 << 10).ok());
    CHECK(std::all_of(z.begin(), z.end(), [](uint8_t b) { return b == 0; }));
  }
}

TEST_CASE("extents report holes and data of a sparse file") {
  TempPath tmp;
  auto exp = OpenOrFail(Spec(tmp.path(), 4 << 20));
  const auto data = RandomBytes(1 << 20, 4);
  REQUIRE(exp->Write(data.data(), data.size(), 1 << 20, false).ok());
  std::vector<FileExport::Extent> seen;
  REQUIRE(exp->Extents(4 << 20, 0,
                       [&](const FileExport::Extent& e) {
                         seen.push_back(e);
                         return Status::Ok();
                       })
              .ok());
  REQUIRE(seen.size() == 3);
  CHECK((seen[0].offset == 0 && seen[0].length == 1u << 20 && seen[0].hole));
  CHECK((seen[1].offset == 1u << 20 && seen[1].length == 1u << 20 && !seen[1].hole));
  CHECK((seen[2].offset == 2u << 20 && seen[2].length == 2u << 20 && seen[2].hole));
}

TEST_CASE("opening errors name the key and value") {
  TempPath tmp;
  ExportSpec missing;
  missing.file = tmp.path();
  std::unique_ptr<FileExport> exp;
  CHECK(FileExport::Open(missing, &exp).message() ==
        "file=" + tmp.path() + ": open: No such file or directory");

  OpenOrFail(Spec(tmp.path(), 2 << 20));
  ExportSpec smaller = Spec(tmp.path(), 1 << 20);
  smaller.size_text = "1M";
  CHECK(FileExport::Open(smaller, &exp).message() ==
        "size=1M is smaller than file=" + tmp.path() + " (2 MiB)");

  ExportSpec dir = Spec("/tmp", 0);
  dir.size.reset();
  dir.readonly = true;
  CHECK(FileExport::Open(dir, &exp).message() == "file=/tmp: not a regular file or block device");
}

TEST_CASE("size= extends an existing file without touching its data") {
  TempPath tmp;
  const auto data = RandomBytes(4096, 5);
  {
    auto exp = OpenOrFail(Spec(tmp.path(), 1 << 20));
    REQUIRE(exp->Write(data.data(), data.size(), 0, false).ok());
  }
  auto bigger = OpenOrFail(Spec(tmp.path(), 2 << 20));
  CHECK(bigger->size() == 2u << 20);
  std::vector<uint8_t> back(4096);
  REQUIRE(bigger->Read(back.data(), back.size(), 0).ok());
  CHECK(back == data);
}

namespace {

mode_t PermissionBits(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// Sets the process umask for the lifetime of the object.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(umask(mask)) {}
  ~ScopedUmask() { umask(previous_); }

 private:
  mode_t previous_;
};

}  // namespace

TEST_CASE(
    "a file created by size= is readable and writable by its owner only, whatever the umask") {
  for (const mode_t mask : {mode_t{0}, mode_t{022}, mode_t{077}, mode_t{0277}}) {
    CAPTURE(mask);
    TempPath tmp;
    {
      const ScopedUmask scoped(mask);
      OpenOrFail(Spec(tmp.path(), 1 << 20));
    }
    CHECK(PermissionBits(tmp.path()) == 0600);
  }
}

TEST_CASE("an existing file keeps its mode when size= opens or extends it") {
  TempPath tmp;
  const int fd = open(tmp.path().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(fchmod(fd, 0640) == 0);
  close(fd);
  OpenOrFail(Spec(tmp.path(), 1 << 20));
  CHECK(PermissionBits(tmp.path()) == 0640);
  OpenOrFail(Spec(tmp.path(), 2 << 20));
  CHECK(PermissionBits(tmp.path()) == 0640);
}
