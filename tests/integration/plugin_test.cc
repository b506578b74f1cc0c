// nbdkit-dst-plugin data path and export semantics, through libnbd against a
// real nbdkit: I/O round trips checked against the backing file, trim and
// zero, extents of sparse files, export listing and selection, advertised
// flags and block sizes, read-only exports.
#include <libnbd.h>
#include <sys/stat.h>

#include <optional>
#include <sstream>
#include <tuple>

#include "tests/integration/plugin_fixture.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_data");

// A served file with one connected client.
struct Served {
  TempDir dir;
  std::string file;
  std::optional<PluginServer> server;
  NbdClient client;

  explicit Served(std::vector<std::string> extra_args = {}, std::string size = "16M") {
    file = dir.File("disk.img");
    std::vector<std::string> args = {"file=" + file, "size=" + size};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    server.emplace(std::move(args));
    REQUIRE_NBD_OK(client.Connect(server->uri()));
  }
};

TEST_CASE("random data round trip matches the backing file byte for byte") {
  Served s;
  REQUIRE(s.client.Size() == static_cast<int64_t>(16 * kMiB));
  CHECK(FileSize(s.file) == 16 * kMiB);  // created by size=
  const Bytes data = RandomBytes(16 * kMiB, 1);
  for (uint64_t off = 0; off < data.size(); off += 2 * kMiB)
    REQUIRE_NBD_OK(s.client.Pwrite(std::span(data).subspan(off, 2 * kMiB), off));
  const Bytes back = s.client.ReadOrThrow(data.size(), 0);
  CHECK_MESSAGE(!FirstDifference(back, data), "read differs at " << *FirstDifference(back, data));
  REQUIRE_NBD_OK(s.client.Flush());
  const Bytes on_disk = ReadFile(s.file);
  CHECK_MESSAGE(!FirstDifference(on_disk, data),
                "backing file differs at " << *FirstDifference(on_disk, data));
}

TEST_CASE("FUA writes and flush succeed and persist") {
  Served s;
  CHECK(s.client.CanFua());
  CHECK(s.client.CanFlush());
  const Bytes data = RandomBytes(256 * kKiB, 2);
  CHECK_NBD_OK(s.client.Pwrite(data, 3 * kMiB, LIBNBD_CMD_FLAG_FUA));
  CHECK(ReadFileRange(s.file, 3 * kMiB, data.size()) == data);
  CHECK_NBD_OK(s.client.Flush());
  CHECK_NBD_OK(s.client.Zero(64 * kKiB, 3 * kMiB, LIBNBD_CMD_FLAG_FUA));
  CHECK(AllZero(s.client.ReadOrThrow(64 * kKiB, 3 * kMiB)));
  CHECK_NBD_OK(s.client.Cache(kMiB, 0));
}

TEST_CASE("trim reads back zeros and punches a hole in the file") {
  Served s;
  REQUIRE(s.client.CanTrim());
  const Bytes data = RandomBytes(4 * kMiB, 3);
  REQUIRE_NBD_OK(s.client.Pwrite(data, 4 * kMiB));
  REQUIRE_NBD_OK(s.client.Flush());
  const uint64_t before = AllocatedBytes(s.file);
  REQUIRE(before >= 4 * kMiB);
  CHECK_NBD_OK(s.client.Trim(2 * kMiB, 5 * kMiB));
  CHECK_NBD_OK(s.client.Flush());
  CHECK(AllZero(s.client.ReadOrThrow(2 * kMiB, 5 * kMiB)));
  CHECK(s.client.ReadOrThrow(kMiB, 4 * kMiB) == Bytes(data.begin(), data.begin() + kMiB));
  CHECK(s.client.ReadOrThrow(kMiB, 7 * kMiB) == Bytes(data.end() - kMiB, data.end()));
  const uint64_t after = AllocatedBytes(s.file);
  CHECK_MESSAGE(after + 2 * kMiB <= before, "st_blocks: " << before << " -> " << after);
}

TEST_CASE("zero with and without may-trim reads back zeros") {
  Served s;
  REQUIRE(s.client.CanZero());
  const Bytes data = RandomBytes(4 * kMiB, 4);
  REQUIRE_NBD_OK(s.client.Pwrite(data, 0));
  SUBCASE("may trim") {
    CHECK_NBD_OK(s.client.Zero(kMiB, kMiB));
  }
  SUBCASE("no hole") {
    CHECK_NBD_OK(s.client.Zero(kMiB, kMiB, LIBNBD_CMD_FLAG_NO_HOLE));
  }
  SUBCASE("unaligned to 4K, aligned to 512") {
    CHECK_NBD_OK(s.client.Zero(kMiB, kMiB, LIBNBD_CMD_FLAG_NO_HOLE));
    CHECK_NBD_OK(s.client.Zero(1536, 512));
    CHECK(AllZero(s.client.ReadOrThrow(1536, 512)));
    CHECK(s.client.ReadOrThrow(512, 0) == Bytes(data.begin(), data.begin() + 512));
  }
  CHECK(AllZero(s.client.ReadOrThrow(kMiB, kMiB)));
  CHECK(AllZero(ReadFileRange(s.file, kMiB, kMiB)));
  CHECK(s.client.ReadOrThrow(kMiB, 2 * kMiB) == Bytes(data.begin() + 2 * kMiB, data.end() - kMiB));
}

TEST_CASE("FAST_ZERO either zeroes or answers ENOTSUP") {
  Served s;
  REQUIRE(s.client.CanFastZero());
  const Bytes data = RandomBytes(2 * kMiB, 5);
  REQUIRE_NBD_OK(s.client.Pwrite(data, 0));
  for (uint32_t flags :
       {LIBNBD_CMD_FLAG_FAST_ZERO, LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE}) {
    CAPTURE(flags);
    const NbdStatus st = s.client.Zero(kMiB, 0, flags);
    CHECK_MESSAGE((st.ok() || st.err == ENOTSUP), st);
    if (st.ok()) CHECK(AllZero(s.client.ReadOrThrow(kMiB, 0)));
  }
  // Fast zero of what is already a hole is always possible.
  CHECK_NBD_OK(s.client.Zero(kMiB, 8 * kMiB, LIBNBD_CMD_FLAG_FAST_ZERO));
  CHECK(AllZero(s.client.ReadOrThrow(kMiB, 8 * kMiB)));
}

// Sparse 8 MiB file with data only in [4 MiB, 5 MiB).
std::string SparseFileWithMiddleBlock(const TempDir& dir) {
  const std::string file = dir.File("sparse.img");
  CreateSparseFile(file, 8 * kMiB);
  WriteFileAt(file, 4 * kMiB, RandomBytes(kMiB, 6));
  return file;
}

TEST_CASE("extents of a sparse file: hole, data, hole (libnbd)") {
  TempDir dir;
  PluginServer server({"file=" + SparseFileWithMiddleBlock(dir)});
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(server.uri()));
  REQUIRE(c.CanBlockStatus());
  std::vector<Extent> map;
  REQUIRE_NBD_OK(c.Map(8 * kMiB, 0, &map));
  REQUIRE(map.size() == 3);
  CHECK(map[0].offset == 0);
  CHECK(map[0].length == 4 * kMiB);
  CHECK(map[0].hole());
  CHECK(map[0].zero());
  CHECK(map[1].offset == 4 * kMiB);
  CHECK(map[1].length == kMiB);
  CHECK_FALSE(map[1].hole());
  CHECK_FALSE(map[1].zero());
  CHECK(map[2].offset == 5 * kMiB);
  CHECK(map[2].length == 3 * kMiB);
  CHECK(map[2].hole());
}

TEST_CASE("extents of a sparse file: hole, data, hole (nbdinfo --map)") {
  TempDir dir;
  PluginServer server({"file=" + SparseFileWithMiddleBlock(dir)});
  const CommandResult r = RunCommand({kNbdinfo, "--map", server.uri()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  // Columns: offset, length, type, description.
  std::istringstream in(r.stdout_text);
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> rows;
  uint64_t off, len;
  unsigned type;
  std::string desc;
  while (in >> off >> len >> type >> desc)
    rows.emplace_back(off, len, desc);
  INFO(r.stdout_text);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == std::tuple<uint64_t, uint64_t, std::string>{0, 4 * kMiB, "hole,zero"});
  CHECK(rows[1] == std::tuple<uint64_t, uint64_t, std::string>{4 * kMiB, kMiB, "data"});
  CHECK(rows[2] == std::tuple<uint64_t, uint64_t, std::string>{5 * kMiB, 3 * kMiB, "hole,zero"});
}

// Two exports: alpha (1 MiB) and beta (2 MiB), beta being the default.
struct TwoExports {
  TempDir dir;
  std::optional<PluginServer> server;

  explicit TwoExports(bool beta_is_default = true) {
    std::string toml = beta_is_default ? "default = \"beta\"\n" : "";
    toml += "[[export]]\nname = \"alpha\"\nfile = \"" + dir.File("a.img") +
            "\"\nsize = \"1M\"\ndescription = \"First export\"\n"
            "[[export]]\nname = \"beta\"\nfile = \"" +
            dir.File("b.img") + "\"\nsize = \"2M\"\ndescription = \"Second export\"\n";
    server.emplace(std::vector<std::string>{"config=" + WriteConfig(dir, toml)});
  }
};

TEST_CASE("exports are listed with their descriptions (nbdinfo --list --json)") {
  TwoExports t;
  const CommandResult r = RunCommand({kNbdinfo, "--list", "--json", t.server->uri()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.stderr_text);
  INFO(r.stdout_text);
  CHECK(Contains(r.stdout_text, "\"export-name\": \"alpha\""));
  CHECK(Contains(r.stdout_text, "\"export-name\": \"beta\""));
  CHECK(Contains(r.stdout_text, "\"description\": \"First export\""));
  CHECK(Contains(r.stdout_text, "\"description\": \"Second export\""));
}

TEST_CASE("exports are listed with their descriptions (NBD_OPT_LIST)") {
  TwoExports t;
  std::vector<ExportEntry> exports;
  REQUIRE_NBD_OK(NbdClient::ListExports(t.server->uri(), &exports));
  REQUIRE(exports.size() == 2);
  CHECK(exports[0].name == "alpha");
  CHECK(exports[0].description == "First export");
  CHECK(exports[1].name == "beta");
  CHECK(exports[1].description == "Second export");
}

TEST_CASE("the default export is served to a client asking for \"\"") {
  SUBCASE("config with default = \"beta\"") {
    TwoExports t;
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(t.server->uri("")));
    CHECK(c.Size() == static_cast<int64_t>(2 * kMiB));
    CHECK(c.ExportDescription() == "Second export");
  }
  SUBCASE("config without default: the first export") {
    TwoExports t(/*beta_is_default=*/false);
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(t.server->uri("")));
    CHECK(c.Size() == static_cast<int64_t>(kMiB));
  }
  SUBCASE("single export: named \"default\" unless name= is given") {
    TempDir dir;
    PluginServer server({"file=" + dir.File("x.img"), "size=1M", "description=just one"});
    for (const char* name : {"", "default"}) {
      NbdClient c;
      CAPTURE(name);
      REQUIRE_NBD_OK(c.Connect(server.uri(name)));
      CHECK(c.Size() == static_cast<int64_t>(kMiB));
      CHECK(c.ExportDescription() == "just one");
    }
  }
  SUBCASE("single export with name=") {
    TempDir dir;
    PluginServer server({"file=" + dir.File("x.img"), "size=1M", "name=disk0"});
    for (const char* name : {"", "disk0"}) {
      NbdClient c;
      CAPTURE(name);
      CHECK_NBD_OK(c.Connect(server.uri(name)));
    }
    NbdClient other;
    CHECK_NBD_FAILS(other.Connect(server.uri("default")));
  }
}

TEST_CASE("an unknown export name is refused at NBD_OPT_GO") {
  TwoExports t;
  NbdClient c;
  REQUIRE_NBD_OK(c.ConnectOptMode(t.server->uri()));
  REQUIRE_NBD_OK(c.SetExportName("nope"));
  CHECK_NBD_FAILS(c.OptGo());
  // The refusal is an option reply: the same connection may choose again.
  REQUIRE_NBD_OK(c.SetExportName("alpha"));
  REQUIRE_NBD_OK(c.OptGo());
  CHECK(c.Size() == static_cast<int64_t>(kMiB));
  NbdClient direct;
  CHECK_NBD_FAILS(direct.Connect(t.server->uri("nope")));
}

TEST_CASE("advertised flags: multi-conn, block sizes, write capabilities") {
  Served s;
  CHECK(s.client.CanMultiConn());
  CHECK_FALSE(s.client.IsReadOnly());
  CHECK(s.client.CanTrim());
  CHECK(s.client.CanZero());
  CHECK(s.client.CanCache());
  const BlockSizes b = s.client.GetBlockSizes();
  CHECK(b.minimum == 512);
  CHECK(b.preferred == 4096);
  CHECK(b.maximum == static_cast<int64_t>(32 * kMiB));
}

TEST_CASE("multi-conn: a write on one connection is seen by another after flush") {
  Served s;
  NbdClient second;
  REQUIRE_NBD_OK(second.Connect(s.server->uri()));
  const Bytes data = RandomBytes(64 * kKiB, 8);
  REQUIRE_NBD_OK(s.client.Pwrite(data, kMiB));
  REQUIRE_NBD_OK(s.client.Flush());
  CHECK(second.ReadOrThrow(data.size(), kMiB) == data);
}

TEST_CASE("readonly=true: read-only export, writes, trims and zeroes fail with EPERM") {
  TempDir dir;
  const std::string file = dir.File("ro.img");
  const Bytes data = RandomBytes(kMiB, 9);
  WriteFile(file, data);
  PluginServer server({"file=" + file, "readonly=true"});
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(server.uri()));
  CHECK(c.IsReadOnly());
  CHECK(c.ReadOrThrow(kMiB, 0) == data);
  // Past libnbd's own checks, so that the server's answer is what is seen.
  REQUIRE_NBD_OK(c.SetStrictMode(0));
  CHECK_NBD_ERR(c.Pwrite(Bytes(4096, 1), 0), EPERM);
  CHECK_NBD_ERR(c.Trim(4096, 0), EPERM);
  CHECK_NBD_ERR(c.Zero(4096, 0), EPERM);
  CHECK(ReadFile(file) == data);
}

TEST_CASE("a backing file created by size= is private to its owner (mode 0600 under umask 022)") {
  TempDir dir;
  const std::string file = dir.File("new.img");
  const mode_t previous = umask(022);  // nbdkit inherits it
  std::optional<PluginServer> server;
  server.emplace(std::vector<std::string>{"file=" + file, "size=16M"});
  umask(previous);
  struct stat st {};
  REQUIRE(stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(server->uri()));
  CHECK_NBD_OK(c.Pwrite(Bytes(4096, 1), 0));
}

TEST_CASE("nbdkit --dump-plugin: requests of a connection serialised, connections parallel") {
  const CommandResult r = RunCommand({DST_TOOL_NBDKIT, "--dump-plugin", DST_PLUGIN_PATH},
                                     std::chrono::seconds(10), NbdkitEnvironment());
  INFO(r.stdout_text << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(Contains(r.stdout_text, "name=dst\n"));
  CHECK(Contains(r.stdout_text, "thread_model=serialize_requests\n"));
}

// nbdkit says at start which model it runs the plugin under.
TEST_CASE("parallel-requests=true runs a connection's requests in parallel; the default does not") {
  TempDir dir;
  for (const bool parallel : {false, true}) {
    CAPTURE(parallel);
    std::vector<std::string> args = {"file=" + dir.File("disk.img"), "size=1M"};
    if (parallel) args.push_back("parallel-requests=true");
    PluginServer server(args, Transport::kUnix, {"-v"});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(server.uri()));
    CHECK_NBD_OK(c.Pwrite(Bytes(4096, 7), 0));
    const std::string log = server.stderr_text();
    CHECK(Contains(log, parallel ? "using thread model: parallel\n"
                                 : "using thread model: serialize_requests\n"));
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
