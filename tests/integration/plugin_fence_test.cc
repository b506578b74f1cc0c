// Fencing of resent writes (docs/transactions.md, docs/nbdkit-plugin.md "Fencing"),
// against a real nbdkit with libnbd's C API the way the aggregator uses it:
// the export name carries @dst-fence:SESSION:EPOCH, the export description
// confirms it, and a newer epoch of a session fences off the older ones'
// writes. debug-hold-write= delays a write in the server the way a slow
// network delays a first copy, to show the hazard and that the fence removes
// it.
#include <libnbd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
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
      {"vol0@dst-fence:xyz:1", "fence session 'xyz'"},
      {"vol0@dst-fence:" + session + ":0", "fence epoch '0'"},
      {"vol0@dst-fence:" + session, "fence suffix '" + session + "'"},
      {"vol0@dst-fence:" + session + ":1x", "fence epoch '1x'"},
      {"vol0@dst-fence:" + session + ":9223372036854775808", "fence epoch '9223372036854775808'"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.name);
    NbdClient c;
    CHECK_NBD_FAILS(Open(c, *s.server, b.name));
    CHECK_FALSE(LineWithAll(s.log(), {"export name '" + b.name + "'", b.complaint}).empty());
  }
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

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
