// Fencing of resent writes (docs/transactions.md, docs/nbdkit-plugin.md "Fencing"),
// against a real nbdkit with libnbd's C API the way the aggregator uses it:
// the export name carries @dst-fence:SESSION:EPOCH, the export description
// confirms it, and a newer epoch of a session fences off the older ones'
// writes. debug-hold-write= delays a write in the server the way a slow
// network delays a first copy, to show the hazard and that the fence removes
// it.
#include <arpa/inet.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <thread>

#include "tests/integration/plugin_fixture.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_fence");

constexpr const char* kSessionA = "0123456789abcdef0123456789abcdef";
constexpr const char* kSessionB = "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb";
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kHeldOffset = kMiB;
constexpr int kHoldMs = 1500;

std::string Fenced(const std::string& name, const char* session, uint64_t epoch) {
  return name + "@dst-fence:" + session + ":" + std::to_string(epoch);
}

std::string Confirmation(const char* session, uint64_t epoch) {
  return std::string("dst-fence ") + session + " " + std::to_string(epoch);
}

NbdStatus LastError() {
  const int err = nbd_get_errno();
  const char* msg = nbd_get_error();
  return {err != 0 ? err : EIO, msg ? msg : "unknown libnbd error"};
}

// Opens export `name` as the aggregator does: the exact name with
// nbd_set_export_name (no URI escaping in the way) and full info, so that
// the server sends the export description.
NbdStatus Open(NbdClient& c, const NbdkitServer& server, const std::string& name) {
  nbd_handle* h = c.handle();
  if (nbd_set_export_name(h, name.c_str()) == -1 || nbd_set_full_info(h, true) == -1 ||
      nbd_connect_unix(h, server.socket_path().c_str()) == -1)
    return LastError();
  return {};
}

std::string Description(NbdClient& c) {
  char* desc = nbd_get_export_description(c.handle());
  if (!desc) return "<none: " + LastError().ToString() + ">";
  std::string out = desc;
  std::free(desc);
  return out;
}

// One 16 MiB export "vol0" with a configured description.
struct FenceServer {
  TempDir dir;
  std::string file = dir.File("vol0.img");
  std::optional<PluginServer> server;

  explicit FenceServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"file=" + file, "size=16M", "name=vol0",
                                     "description=configured disk"};
    args.insert(args.end(), extra.begin(), extra.end());
    server.emplace(std::move(args));
  }
  std::string log() const { return server->stderr_text(); }

  // Waits (bounded) for a line of nbdkit's stderr; false if it never came.
  bool WaitForLog(std::string_view needle, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!Contains(log(), needle)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
};

// Waits (bounded) for an asynchronous command; its status, or ETIME if it
// did not complete in time.
NbdStatus AwaitCommand(NbdClient& c, int64_t cookie, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const int done = nbd_aio_command_completed(c.handle(), cookie);
    if (done == 1) return {};
    if (done == -1) return LastError();
    if (nbd_poll(c.handle(), 100) == -1) return LastError();
  }
  return {ETIME, "command did not complete in time"};
}

TEST_CASE("a fenced open is confirmed in the export description, an unfenced one is not") {
  FenceServer s;
  NbdClient fenced, fenced_default, plain;
  REQUIRE_NBD_OK(Open(fenced, *s.server, Fenced("vol0", kSessionA, 1)));
  CHECK(Description(fenced) == Confirmation(kSessionA, 1));
  CHECK(fenced.Size() == static_cast<int64_t>(16 * kMiB));
  // An empty NAME is the default export, fenced all the same.
  REQUIRE_NBD_OK(Open(fenced_default, *s.server, Fenced("", kSessionA, 1)));
  CHECK(Description(fenced_default) == Confirmation(kSessionA, 1));
  REQUIRE_NBD_OK(Open(plain, *s.server, "vol0"));
  CHECK(Description(plain) == "configured disk");
}

TEST_CASE("a newer epoch fences off the writes of the older one") {
  FenceServer s;
  NbdClient one, two, late;
  REQUIRE_NBD_OK(Open(one, *s.server, Fenced("vol0", kSessionA, 1)));
  const Bytes first = RandomBytes(kBlock, 1);
  REQUIRE_NBD_OK(one.Pwrite(first, 0));

  REQUIRE_NBD_OK(Open(two, *s.server, Fenced("vol0", kSessionA, 2)));
  CHECK(Description(two) == Confirmation(kSessionA, 2));
  const Bytes stale = RandomBytes(kBlock, 2);
  CHECK_NBD_ERR(one.Pwrite(stale, 0), ESHUTDOWN);
  CHECK_NBD_ERR(one.Trim(kBlock, 0), ESHUTDOWN);
  CHECK_NBD_ERR(one.Zero(kBlock, 0), ESHUTDOWN);
  // Reads and flush are not fenced.
  CHECK(one.ReadOrThrow(kBlock, 0) == first);
  CHECK_NBD_OK(one.Flush());
  CHECK(two.ReadOrThrow(kBlock, 0) == first);
  CHECK(Contains(
      s.log(), "fence: refusing write of 4096 bytes at 0 from stale epoch 1 (session current 2)"));

  // Epoch 1 may not come back.
  CHECK_NBD_FAILS(Open(late, *s.server, Fenced("vol0", kSessionA, 1)));
  CHECK(Contains(s.log(), "epoch 1 is older than current epoch 2"));
  // Epoch 2 writes as usual.
  const Bytes second = RandomBytes(kBlock, 3);
  CHECK_NBD_OK(two.Pwrite(second, 0));
  CHECK(two.ReadOrThrow(kBlock, 0) == second);
}

TEST_CASE("another session and unfenced connections are not affected") {
  FenceServer s;
  NbdClient a1, b1, plain, a2, b1_again;
  REQUIRE_NBD_OK(Open(a1, *s.server, Fenced("vol0", kSessionA, 1)));
  REQUIRE_NBD_OK(Open(b1, *s.server, Fenced("vol0", kSessionB, 1)));
  REQUIRE_NBD_OK(Open(plain, *s.server, "vol0"));
  REQUIRE_NBD_OK(Open(a2, *s.server, Fenced("vol0", kSessionA, 2)));
  CHECK_NBD_ERR(a1.Pwrite(Bytes(kBlock, 1), 0), ESHUTDOWN);
  const Bytes b_data = RandomBytes(kBlock, 4);
  CHECK_NBD_OK(b1.Pwrite(b_data, kBlock));
  CHECK_NBD_OK(b1.Trim(kBlock, 2 * kBlock));
  REQUIRE_NBD_OK(Open(b1_again, *s.server, Fenced("vol0", kSessionB, 1)));
  CHECK(Description(b1_again) == Confirmation(kSessionB, 1));
  const Bytes plain_data = RandomBytes(kBlock, 5);
  CHECK_NBD_OK(plain.Pwrite(plain_data, 3 * kBlock));
  CHECK_NBD_OK(plain.Zero(kBlock, 4 * kBlock));
  CHECK(a2.ReadOrThrow(kBlock, kBlock) == b_data);
  CHECK(a2.ReadOrThrow(kBlock, 3 * kBlock) == plain_data);
}

TEST_CASE("a malformed fence suffix is refused and the server keeps serving") {
  FenceServer s;
  const std::string session = kSessionA;
  const struct {
    std::string name;
    std::string complaint;
  } bad[] = {
      {"vol0@dst-fence:xyz:1", "fence session of 3 characters"},
      {"vol0@dst-fence:" + session + ":0", "fence epoch '0'"},
      {"vol0@dst-fence:" + session, "fence suffix of 32 characters"},
      {"vol0@dst-fence:" + session + ":1x", "fence epoch '1x'"},
      {"vol0@dst-fence:" + session + ":9223372036854775808", "fence epoch '9223372036854775808'"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.name);
    NbdClient c;
    CHECK_NBD_FAILS(Open(c, *s.server, b.name));
    CHECK_FALSE(
        LineWithAll(s.log(), {"export name 'vol0@dst-fence:<redacted>'", b.complaint}).empty());
  }
  CHECK_FALSE(Contains(s.log(), session));  // named by neither error nor echo
  // Never taken as a literal export name.
  CHECK_FALSE(Contains(s.log(), "unknown export 'vol0@dst-fence"));
  // A refused open (here: an unknown export) does not raise the epoch.
  NbdClient unknown;
  CHECK_NBD_FAILS(Open(unknown, *s.server, Fenced("nope", kSessionA, 9)));
  NbdClient fenced, plain;
  REQUIRE_NBD_OK(Open(fenced, *s.server, Fenced("vol0", kSessionA, 1)));
  CHECK_NBD_OK(fenced.Pwrite(Bytes(kBlock, 7), 0));
  REQUIRE_NBD_OK(Open(plain, *s.server, "vol0"));
  CHECK(plain.ReadOrThrow(kBlock, 0) == Bytes(kBlock, 7));
}

// The resend race: a write of the first connection is held in the server;
// a second connection writes the same block again and reads it back; then
// the held first copy is let go.
struct RaceOutcome {
  NbdStatus held;     // how the held first copy completed
  Bytes final_block;  // what the block holds after it did
  Bytes first_copy;
  Bytes resend;
};

RaceOutcome RunHeldWriteRace(FenceServer& s, const std::string& first_name,
                             const std::string& second_name) {
  RaceOutcome out;
  out.first_copy = RandomBytes(kBlock, 10);
  out.resend = RandomBytes(kBlock, 11);
  NbdClient first, second;
  REQUIRE_NBD_OK(Open(first, *s.server, first_name));
  const int64_t cookie = nbd_aio_pwrite(first.handle(), out.first_copy.data(), kBlock, kHeldOffset,
                                        NBD_NULL_COMPLETION, 0);
  REQUIRE_MESSAGE(cookie != -1, LastError());
  REQUIRE_MESSAGE(s.WaitForLog("debug-hold-write: holding write of 4096 bytes at 1048576",
                               std::chrono::seconds(5)),
                  s.log());

  REQUIRE_NBD_OK(Open(second, *s.server, second_name));
  REQUIRE_NBD_OK(second.Pwrite(out.resend, kHeldOffset));
  CHECK(second.ReadOrThrow(kBlock, kHeldOffset) == out.resend);
  // All of that happened while the first copy was still held.
  CHECK_FALSE(Contains(s.log(), "debug-hold-write: releasing"));

  out.held = AwaitCommand(first, cookie, std::chrono::milliseconds(kHoldMs + 8000));
  out.final_block = second.ReadOrThrow(kBlock, kHeldOffset);
  return out;
}

TEST_CASE("a held first copy of a write is refused once the resend's epoch has opened") {
  FenceServer s({"debug-hold-write=1M:" + std::to_string(kHoldMs)});
  const RaceOutcome r =
      RunHeldWriteRace(s, Fenced("vol0", kSessionA, 1), Fenced("vol0", kSessionA, 2));
  CHECK_MESSAGE(r.held.err == ESHUTDOWN, r.held);
  CHECK(r.final_block == r.resend);
  CHECK(ReadFileRange(s.file, kHeldOffset, kBlock) == r.resend);
  CHECK(Contains(s.log(), "fence: refusing write of 4096 bytes at 1048576 from stale epoch 1"));
}

TEST_CASE("without fencing the held first copy lands last: the hazard") {
  FenceServer s({"debug-hold-write=1M:" + std::to_string(kHoldMs)});
  const RaceOutcome r = RunHeldWriteRace(s, "vol0", "vol0");
  CHECK_MESSAGE(r.held.ok(), r.held);
  CHECK(r.final_block == r.first_copy);  // the stale data won
  CHECK(Contains(s.log(), "debug-hold-write: releasing write of 4096 bytes at 1048576"));
}

TEST_CASE("debug-hold-write holds only the first covering write") {
  FenceServer s({"debug-hold-write=1M:" + std::to_string(kHoldMs)});
  NbdClient c;
  REQUIRE_NBD_OK(Open(c, *s.server, "vol0"));
  CHECK_NBD_OK(c.Pwrite(Bytes(kBlock, 1), 0));  // does not cover 1M: not held
  CHECK_FALSE(Contains(s.log(), "debug-hold-write"));
  // Covers 1M from below; the second write at 1M is not held any more.
  const auto start = std::chrono::steady_clock::now();
  CHECK_NBD_OK(c.Pwrite(Bytes(2 * kBlock, 2), kHeldOffset - kBlock));
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(kHoldMs));
  CHECK(Contains(s.log(), "debug-hold-write: holding write of 8192 bytes at 1044480 for 1500 ms"));
  CHECK_NBD_OK(c.Pwrite(Bytes(kBlock, 3), kHeldOffset));
  const std::string log = s.log();
  CHECK(log.find("holding write") == log.rfind("holding write"));
}

// --- who may fence (the audit's P10, and epoch jumps) -------------------------

constexpr uint64_t kMaxEpoch = 9223372036854775807ull;  // 2^63-1

// Opens `name` on 127.0.0.1:port from the local address `source`, so that
// access rules for other addresses than 127.0.0.1 can be exercised: the
// socket is bound and connected here and handed to libnbd. In option mode
// the handle stays in negotiation (for nbd_opt_info / nbd_opt_go).
NbdStatus OpenFrom(NbdClient& c, const char* source, int port, const std::string& name,
                   bool option_mode = false) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {errno, "socket"};
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
      inet_pton(AF_INET, "127.0.0.1", &to.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    const int err = errno;
    ::close(fd);
    return {err, std::string("connect from ") + source};
  }
  nbd_handle* h = c.handle();
  if (nbd_set_opt_mode(h, option_mode) == -1 || nbd_set_export_name(h, name.c_str()) == -1 ||
      nbd_set_full_info(h, true) == -1 || nbd_connect_socket(h, fd) == -1)
    return LastError();  // libnbd owns fd from nbd_connect_socket on
  return {};
}

// NBD_OPT_INFO for `name` on a handle in option mode.
NbdStatus OptInfo(NbdClient& c, const std::string& name) {
  if (nbd_set_export_name(c.handle(), name.c_str()) == -1 || nbd_opt_info(c.handle()) == -1)
    return LastError();
  return {};
}

// Export "pub" on TCP 127.0.0.1: 127.0.0.1 may write, 127.0.0.2 may read.
struct SharedNode {
  TempDir dir;
  std::string file = dir.File("pub.img");
  PluginServer server;

  explicit SharedNode(std::vector<std::string> nbdkit_flags = {})
      : server(
            {"file=" + file, "size=16M", "name=pub", "access=127.0.0.1 rw", "access=127.0.0.2 ro"},
            Transport::kTcp4, std::move(nbdkit_flags)) {}
  std::string log() const { return server.stderr_text(); }
};

// The writer, as the aggregator connects: fenced, from a read-write address.
void ExpectWriterStillWrites(NbdClient& writer, uint8_t fill) {
  const Bytes data(kBlock, fill);
  CHECK_NBD_OK(writer.Pwrite(data, 0));
  CHECK(writer.ReadOrThrow(kBlock, 0) == data);
}

TEST_CASE("a read-only client cannot fence: NBD_OPT_INFO and GO with a fenced name are refused") {
  SharedNode node;
  NbdClient writer;
  REQUIRE_NBD_OK(OpenFrom(writer, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, 1)));
  CHECK(Description(writer) == Confirmation(kSessionA, 1));
  ExpectWriterStillWrites(writer, 1);

  // The audit's P10: the ro peer asks NBD_OPT_INFO for the writer's session
  // at epoch 2^63-1 (a session it sniffed from a plain nbd:// link).
  NbdClient reader;
  REQUIRE_NBD_OK(OpenFrom(reader, "127.0.0.2", node.server.port(), "pub", /*option_mode=*/true));
  CHECK_NBD_FAILS(OptInfo(reader, Fenced("pub", kSessionA, kMaxEpoch)));
  CHECK_NBD_FAILS(OptInfo(reader, Fenced("pub", kSessionB, 1)));  // nor a session of its own
  REQUIRE_NBD_OK(reader.SetExportName(Fenced("pub", kSessionA, kMaxEpoch)));
  CHECK_NBD_FAILS(reader.OptGo());
  CHECK(Contains(node.log(),
                 "export 'pub': fence: refusing a fenced open from 127.0.0.2: the connection is "
                 "read-only, and only writers may fence"));

  // The writer was not fenced: it keeps writing, and its next epoch is 2.
  ExpectWriterStillWrites(writer, 2);
  NbdClient reconnected;
  REQUIRE_NBD_OK(
      OpenFrom(reconnected, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, 2)));
  ExpectWriterStillWrites(reconnected, 3);
  CHECK_NBD_ERR(writer.Pwrite(Bytes(kBlock, 4), 0), ESHUTDOWN);  // epoch 1 is stale now

  // The reader still reads, with the plain name, read-only.
  REQUIRE_NBD_OK(reader.SetExportName("pub"));
  REQUIRE_NBD_OK(reader.OptGo());
  CHECK(reader.IsReadOnly());
  CHECK(reader.ReadOrThrow(kBlock, 0) == Bytes(kBlock, 3));
  CHECK_FALSE(Contains(node.log(), kSessionA));
  CHECK_FALSE(Contains(node.log(), kSessionB));
}

TEST_CASE("a fenced name on a readonly=true export is refused, the plain name serves") {
  TempDir dir;
  const std::string file = dir.File("ro.img");
  WriteFile(file, Bytes(kMiB, 5));
  PluginServer server({"file=" + file, "readonly=true", "name=vol0"});
  NbdClient fenced, plain;
  CHECK_NBD_FAILS(Open(fenced, server, Fenced("vol0", kSessionA, 1)));
  REQUIRE_NBD_OK(Open(plain, server, "vol0"));
  CHECK(plain.ReadOrThrow(kBlock, 0) == Bytes(kBlock, 5));
  CHECK(Contains(server.stderr_text(), "refusing a fenced open from unix socket"));
}

TEST_CASE("a writer's epoch jump beyond the bound is refused and the session is unchanged") {
  SharedNode node;
  NbdClient writer, jumper, edge, next;
  REQUIRE_NBD_OK(OpenFrom(writer, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, 1)));
  ExpectWriterStillWrites(writer, 1);
  CHECK_NBD_FAILS(
      OpenFrom(jumper, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, kMaxEpoch)));
  CHECK(Contains(node.log(),
                 "export 'pub': fence: session #2788636b: epoch 9223372036854775807 is more than "
                 "1048576 above current epoch 1"));
  ExpectWriterStillWrites(writer, 2);
  // 1 + 2^20 is within the bound: an ordinary, if large, reconnect.
  REQUIRE_NBD_OK(
      OpenFrom(edge, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, 1 + 1048576)));
  CHECK_NBD_ERR(writer.Pwrite(Bytes(kBlock, 3), 0), ESHUTDOWN);
  ExpectWriterStillWrites(edge, 4);
  CHECK_FALSE(Contains(node.log(), kSessionA));
}

TEST_CASE("session ids stay out of the plugin's own lines, also with nbdkit -v") {
  SharedNode node({"-v"});
  {
    NbdClient writer, stale, reader, bad;
    REQUIRE_NBD_OK(OpenFrom(writer, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, 3)));
    ExpectWriterStillWrites(writer, 1);
    CHECK_NBD_FAILS(OpenFrom(stale, "127.0.0.1", node.server.port(), Fenced("pub", kSessionA, 2)));
    CHECK_NBD_FAILS(OpenFrom(reader, "127.0.0.2", node.server.port(), Fenced("pub", kSessionA, 4)));
    CHECK_NBD_FAILS(
        OpenFrom(bad, "127.0.0.1", node.server.port(), "pub@dst-fence:" + std::string(kSessionA)));
  }
  const std::string log = node.log();
  CHECK(Contains(log, "fence: session #2788636b: joined epoch 3"));
  CHECK(Contains(log, "fence: session #2788636b: epoch 2 is older than current epoch 3"));
  // nbdkit itself names the export a client asks for in its debug lines;
  // no other line may carry the session.
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (!Contains(line, kSessionA)) continue;
    CAPTURE(line);
    CHECK((Contains(line, "debug: newstyle negotiation: NBD_OPT_") ||
           Contains(line, "debug: dst: open readonly=")));
  }
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
