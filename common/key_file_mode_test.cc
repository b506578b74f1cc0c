#include "common/key_file_mode.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <string>

namespace dst::key_file_mode_test {
namespace {

// A file in a fresh temporary directory, removed at scope end.
class TempKey {
 public:
  TempKey() {
    char dir[] = "/tmp/dst-key-mode.XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    dir_ = dir;
    path_ = dir_ + "/key";
    std::ofstream(path_) << "secret";
  }
  ~TempKey() {
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  void Chmod(mode_t mode) const { REQUIRE(::chmod(path_.c_str(), mode) == 0); }

 private:
  std::string dir_, path_;
};

TEST_CASE("key files private to their owner are accepted") {
  const TempKey key;
  for (mode_t mode : {0600, 0400, 0700, 0500}) {
    key.Chmod(mode);
    CHECK_MESSAGE(CheckKeyFileMode(key.path(), "--key-file " + key.path()).ok(), mode);
  }
}

TEST_CASE("key files other users can read or change are refused, naming file and mode") {
  const TempKey key;
  const struct {
    mode_t mode;
    const char* exposure;
  } cases[] = {
      {0644, "mode 0644 lets every user read it"},
      {0604, "mode 0604 lets every user read it"},
      {0640, "mode 0640 lets its group read it"},
      {0660, "mode 0660 lets other users change it"},
      {0666, "mode 0666 lets other users change it"},
      {0602, "mode 0602 lets other users change it"},
      {0620, "mode 0620 lets other users change it"},
  };
  for (const auto& c : cases) {
    key.Chmod(c.mode);
    const Status s = CheckKeyFileMode(key.path(), "--tls-psk " + key.path());
    INFO(s.message());
    CHECK(s.err() == EACCES);
    CHECK(s.message() == "--tls-psk " + key.path() + ": " + c.exposure +
                             ", and it holds a secret key; refusing to use it (chmod 600 " +
                             key.path() + ")");
  }
}

TEST_CASE("a key of another user's, read through the group, is accepted") {
  // root:GROUP 0640, as a service is often given its key; only the owner
  // differs from the case above, so the stat result is made up.
  struct stat st {};
  st.st_mode = S_IFREG | 0640;
  st.st_uid = ::geteuid() + 1;
  CHECK(CheckKeyFileMode(st, "/etc/dst/key", "--key-file /etc/dst/key").ok());
  st.st_mode = S_IFREG | 0644;  // but not when everyone may read it
  CHECK(CheckKeyFileMode(st, "/etc/dst/key", "--key-file /etc/dst/key").err() == EACCES);
}

TEST_CASE("a missing file or a device is left to whoever reads it") {
  CHECK(CheckKeyFileMode("/nonexistent/key", "--key-file /nonexistent/key").ok());
  CHECK(CheckKeyFileMode("/dev/zero", "--key-file /dev/zero").ok());  // mode 0666, but no key
}

}  // namespace
}  // namespace dst::key_file_mode_test
