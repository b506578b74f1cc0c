// CheckPrivateDir and PrivateControlDir (control_path.h) on real directories: the directory of
// the default control socket in a shared temporary directory is used only when it is ours and
// nobody else can write to it.
#include "aggregator/control/control_path.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

namespace dst::control::control_path_test {
namespace {

class TempDir {
 public:
  TempDir() {
    char dir[] = "/tmp/control-path-test.XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    path_ = dir;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

unsigned ModeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

const std::string kAdvice =
    ": another user may have made it; not using it (remove it, or give --control PATH)";

TEST_CASE("a private directory is created 0700 whatever the umask, and used again") {
  TempDir tmp;
  const std::string dir = tmp.File("dst-aggregator-1000");
  const mode_t old = ::umask(0);
  const Status created = CheckPrivateDir(dir, true);
  ::umask(old);
  REQUIRE_MESSAGE(created.ok(), created.message());
  CHECK(ModeOf(dir) == 0700);
  CHECK(CheckPrivateDir(dir, true).ok());
  CHECK(CheckPrivateDir(dir, false).ok());
}

TEST_CASE("a directory anyone could have made or changed is refused, with what is wrong") {
  TempDir tmp;
  const std::string dir = tmp.File("dst-aggregator-1000");
  SUBCASE("open to others") {
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    const Status s = CheckPrivateDir(dir, true);
    CHECK(s.err() == EPERM);
    CHECK(s.message() == "control directory " + dir + ": mode 0777, not 0700" + kAdvice);
    CHECK(ModeOf(dir) == 0777);  // left as it is
  }
  SUBCASE("group-readable") {
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chmod(dir.c_str(), 0750) == 0);
    CHECK(CheckPrivateDir(dir, false).message() ==
          "control directory " + dir + ": mode 0750, not 0700" + kAdvice);
  }
  SUBCASE("a symbolic link to a directory of ours") {
    const std::string target = tmp.File("elsewhere");
    REQUIRE(::mkdir(target.c_str(), 0700) == 0);
    REQUIRE(::symlink(target.c_str(), dir.c_str()) == 0);
    CHECK(CheckPrivateDir(dir, true).message() ==
          "control directory " + dir + ": not a directory" + kAdvice);
  }
  SUBCASE("a regular file") {
    std::ofstream(dir) << "x";
    CHECK(CheckPrivateDir(dir, true).message() ==
          "control directory " + dir + ": not a directory" + kAdvice);
  }
  SUBCASE("owned by another user") {
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    const uid_t other = ::geteuid() == 65534 ? 65533 : 65534;
    // Only root can give a directory away; others check the same refusal through a directory
    // another user made, which there is none of here: root's run covers it.
    if (::geteuid() == 0) {
      REQUIRE(::chown(dir.c_str(), other, static_cast<gid_t>(-1)) == 0);
      CHECK(CheckPrivateDir(dir, true).message() ==
            "control directory " + dir + ": owned by uid " + std::to_string(other) +
                ", not by us (uid " + std::to_string(::geteuid()) + ")" + kAdvice);
    }
  }
  SUBCASE("absent, when asked not to create it") {
    CHECK(CheckPrivateDir(dir, false).err() == ENOENT);
  }
}

TEST_CASE("the default control path: $XDG_RUNTIME_DIR, else a private directory in $TMPDIR") {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  const std::string saved_runtime = runtime ? runtime : "";
  const char* tmpdir = std::getenv("TMPDIR");
  const std::string saved_tmpdir = tmpdir ? tmpdir : "";
  ::setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
  ::setenv("TMPDIR", "/var/tmp/x", 1);
  if (::geteuid() == 0) {
    CHECK(DefaultControlPath() == "/run/dst-aggregator.sock");
    CHECK(PrivateControlDir().empty());
  } else {
    const std::string uid = std::to_string(::geteuid());
    CHECK(DefaultControlPath() == "/run/user/1000/dst-aggregator.sock");
    CHECK(PrivateControlDir().empty());
    ::setenv("XDG_RUNTIME_DIR", "", 1);
    CHECK(PrivateControlDir() == "/var/tmp/x/dst-aggregator-" + uid);
    CHECK(DefaultControlPath() == "/var/tmp/x/dst-aggregator-" + uid + "/control.sock");
    ::unsetenv("TMPDIR");
    CHECK(DefaultControlPath() == "/tmp/dst-aggregator-" + uid + "/control.sock");
  }
  saved_runtime.empty() ? ::unsetenv("XDG_RUNTIME_DIR")
                        : ::setenv("XDG_RUNTIME_DIR", saved_runtime.c_str(), 1);
  saved_tmpdir.empty() ? ::unsetenv("TMPDIR") : ::setenv("TMPDIR", saved_tmpdir.c_str(), 1);
}

}  // namespace
}  // namespace dst::control::control_path_test
