// Bad configurations: nbdkit must exit non-zero before serving, with one
// stderr line naming the offending key and value.
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/plugin_fixture.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_config");

// Starts nbdkit with args and checks it fails with a line holding all needles.
void ExpectRejected(std::vector<std::string> args,
                    std::initializer_list<std::string_view> needles) {
  const StartFailure f = ExpectStartFailure(args);
  INFO("args: " << JoinArgv(args));
  INFO("stderr:\n" << f.stderr_text);
  CHECK(f.exit_code != 0);
  CHECK_FALSE(LineWithAll(f.stderr_text, needles).empty());
}

TEST_CASE("unknown parameter") {
  TempDir dir;
  ExpectRejected({"file=" + dir.File("d.img"), "size=1M", "foo=bar"}, {"unknown parameter 'foo'"});
}

TEST_CASE("missing file without size=") {
  ExpectRejected({"file=/nonexistent/x"}, {"file=/nonexistent/x", "No such file or directory"});
}

TEST_CASE("bad access rules") {
  TempDir dir;
  const std::string file = "file=" + dir.File("d.img");
  SUBCASE("prefix too long") {
    ExpectRejected({file, "size=1M", "access=10.0.0.0/33 rw"},
                   {"access='10.0.0.0/33 rw'", "bad address range"});
  }
  SUBCASE("IPv6 prefix too long") {
    ExpectRejected({file, "size=1M", "access=::1/129 rw"},
                   {"access='::1/129 rw'", "bad address range"});
  }
  SUBCASE("bad mode") {
    ExpectRejected({file, "size=1M", "access=10.0.0.0/8 rwx"},
                   {"access='10.0.0.0/8 rwx'", "bad access mode"});
  }
  SUBCASE("missing mode") {
    ExpectRejected({file, "size=1M", "access=10.0.0.0/8"}, {"access='10.0.0.0/8'"});
  }
  SUBCASE("bad address") {
    ExpectRejected({file, "size=1M", "access=10.0.0.256 rw"}, {"access='10.0.0.256 rw'"});
  }
}

TEST_CASE("size= smaller than the existing file") {
  TempDir dir;
  const std::string file = dir.File("two.img");
  CreateSparseFile(file, 2 * kMiB);
  ExpectRejected({"file=" + file, "size=1M"}, {"size=1M is smaller than"});
  CHECK(FileSize(file) == 2 * kMiB);  // and the file is left alone
}

TEST_CASE("malformed size") {
  TempDir dir;
  ExpectRejected({"file=" + dir.File("d.img"), "size=12X"}, {"size=12X"});
}

TEST_CASE("config file errors") {
  TempDir dir;
  SUBCASE("missing config") {
    const std::string path = dir.File("missing.toml");
    ExpectRejected({"config=" + path}, {"config=" + path});
  }
  SUBCASE("unreadable config") {
    if (::geteuid() == 0) {
      MESSAGE("skipped: root reads files regardless of permissions");
      return;
    }
    const std::string path = WriteConfig(dir, "[[export]]\nname = \"a\"\nfile = \"/x\"\n");
    REQUIRE(::chmod(path.c_str(), 0) == 0);
    ExpectRejected({"config=" + path}, {"config=" + path});
  }
  SUBCASE("malformed TOML: file and line") {
    const std::string path =
        WriteConfig(dir, "[[export]]\nname = \"a\"\nfile \"" + dir.File("a.img") + "\"\n");
    ExpectRejected({"config=" + path}, {"config=" + path + ":3"});
  }
  SUBCASE("duplicate export name") {
    const std::string path = WriteConfig(
        dir, "[[export]]\nname = \"a\"\nfile = \"" + dir.File("1.img") + "\"\nsize = \"1M\"\n" +
                 "[[export]]\nname = \"a\"\nfile = \"" + dir.File("2.img") + "\"\nsize = \"1M\"\n");
    ExpectRejected({"config=" + path}, {"duplicate export name 'a'"});
  }
  SUBCASE("config= together with file=") {
    const std::string path = WriteConfig(
        dir, "[[export]]\nname = \"a\"\nfile = \"" + dir.File("1.img") + "\"\nsize = \"1M\"\n");
    ExpectRejected({"file=" + dir.File("d.img"), "size=1M", "config=" + path},
                   {"config= cannot be combined with file="});
    ExpectRejected({"config=" + path, "file=" + dir.File("d.img"), "size=1M"},
                   {"config= cannot be combined with file="});
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
