// Standard NBD clients against nbdkit-dst-plugin: nbdcopy, nbdinfo, nbdsh
// (libnbd's Python bindings), qemu-img and qemu-io.
#include "tests/integration/plugin_fixture.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_tools");

using namespace std::chrono_literals;

struct ServedFile {
  TempDir dir;
  std::string file = dir.File("disk.img");
  PluginServer server;
  explicit ServedFile(const std::string& size = "8M")
      : server({"file=" + file, "size=" + size, "description=tool target"}) {}
};

TEST_CASE("nbdcopy a random file in and back out") {
  ServedFile s;
  const std::string in = s.dir.File("in.bin"), out = s.dir.File("out.bin");
  WriteFile(in, RandomBytes(8 * kMiB, 21));
  RunOk({kNbdcopy, in, s.server.uri()});
  CHECK(FilesEqual(in, s.file));
  RunOk({kNbdcopy, s.server.uri(), out});
  CHECK(FilesEqual(in, out));
}

TEST_CASE("nbdinfo: size and flags") {
  ServedFile s;
  CHECK(RunOk({kNbdinfo, "--size", s.server.uri()}).stdout_text == std::to_string(8 * kMiB) + "\n");
  const CommandResult r = RunOk({kNbdinfo, "--json", s.server.uri()});
  INFO(r.stdout_text);
  for (const char* expected :
       {"\"export-size\": 8388608", "\"is_read_only\": false", "\"can_multi_conn\": true",
        "\"can_flush\": true", "\"can_fua\": true", "\"can_trim\": true", "\"can_zero\": true",
        "\"can_fast_zero\": true", "\"can_cache\": true", "\"block_size_minimum\": 512",
        "\"block_size_preferred\": 4096", "\"block_size_maximum\": 33554432",
        "\"description\": \"tool target\"", "\"base:allocation\""}) {
    CHECK_MESSAGE(Contains(r.stdout_text, expected), expected);
  }
  // nbdinfo --can/--is answer through the exit code.
  CHECK(RunCommand({kNbdinfo, "--can", "multi-conn", s.server.uri()}).exit_code == 0);
  CHECK(RunCommand({kNbdinfo, "--is", "read-only", s.server.uri()}).exit_code != 0);
}

TEST_CASE("nbdsh: h.pwrite / h.pread") {
  ServedFile s;
  // nbdsh is `python3 -m nbd`; run it with the python that has the module.
  const std::string script =
      "buf = b'\\xab' * 4096\n"
      "h.pwrite(buf, 8192)\n"
      "assert h.pread(4096, 8192) == buf\n"
      "assert h.get_size() == 8 * 1024 * 1024\n"
      "assert h.can_multi_conn()\n"
      "assert not h.is_read_only()\n"
      "h.flush()\n"
      "h.trim(4096, 8192)\n"
      "assert h.pread(4096, 8192) == bytes(4096)\n"
      "h.pwrite(buf, 16384, nbd.CMD_FLAG_FUA)\n";
  RunOk({kPython3, "-m", "nbd", "-u", s.server.uri(), "-c", script});
  CHECK(AllZero(ReadFileRange(s.file, 8192, 4096)));
  CHECK(ReadFileRange(s.file, 16384, 4096) == Bytes(4096, 0xab));
}

TEST_CASE("qemu-img convert -n and compare") {
  ServedFile s;
  const std::string src = s.dir.File("src.raw");
  WriteFile(src, RandomBytes(8 * kMiB, 22));
  RunOk({kQemuImg, "convert", "-n", "-f", "raw", "-O", "raw", src, s.server.uri()});
  CHECK(FilesEqual(src, s.file));
  RunOk({kQemuImg, "compare", "-f", "raw", "-F", "raw", src, s.server.uri()});
  // And a difference is noticed: compare exits 1 when the images differ.
  WriteFileAt(s.file, 5 * kMiB, Bytes(512, 0x5a));
  CHECK(
      RunCommand({kQemuImg, "compare", "-f", "raw", "-F", "raw", src, s.server.uri()}).exit_code ==
      1);
}

TEST_CASE("qemu-io: write -P, read -P, discard, write -z") {
  ServedFile s;
  const CommandResult r = RunOk({kQemuIo,
                                 "-f",
                                 "raw",
                                 "-c",
                                 "write -P 0xab 0 1M",
                                 "-c",
                                 "read -P 0xab 0 1M",
                                 "-c",
                                 "discard 0 64k",
                                 "-c",
                                 "read -P 0 0 64k",
                                 "-c",
                                 "read -P 0xab 64k 960k",
                                 "-c",
                                 "write -z 2M 1M",
                                 "-c",
                                 "read -P 0 2M 1M",
                                 "-c",
                                 "flush",
                                 s.server.uri()});
  INFO(r.stdout_text);
  INFO(r.stderr_text);
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "failed"));
  CHECK_FALSE(Contains(r.stdout_text + r.stderr_text, "error"));
  CHECK(AllZero(ReadFileRange(s.file, 0, 64 * kKiB)));
  CHECK(ReadFileRange(s.file, 64 * kKiB, 960 * kKiB) == Bytes(960 * kKiB, 0xab));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
