// A client that resets its connection while nbdkit still has many replies to
// send (docs/nbdkit-plugin.md, "nbdkit versions"). nbdkit 1.32.5 with
// parallel worker threads per connection aborts on it
// (`raw_send_socket: Assertion 'sock >= 0' failed`): one worker's send fails
// and shuts the socket down while another, past its check of the
// connection's state, is about to send. The plugin serialises the requests
// of each connection, so that one thread alone sends its replies; the node
// must survive the attack, as the same process, and go on serving.
#include <libnbd.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "tests/integration/plugin_fixture.h"
#include "tests/integration/raw_client.h"

namespace dst::test {
namespace {

TEST_SUITE_BEGIN("plugin_reset");

constexpr int kRounds = 5;
constexpr uint32_t kRequests = 2000;  // the audit's P13: 2000 × 1 MiB READ
constexpr uint32_t kReadSize = 1 << 20;

// One round of the audit's P13 on a fresh connection: pipeline the reads,
// read no reply, reset the connection while nbdkit is busy sending.
void ResetWithRepliesPending(int port) {
  RawClient c(port);
  c.Greet();
  c.Go("");
  Bytes requests;
  for (uint32_t i = 0; i < kRequests; ++i) {
    const auto header =
        Request(nbd::kCmdRead, static_cast<uint64_t>(i) * kReadSize, kReadSize, /*cookie=*/i)
            .Encode();
    requests.insert(requests.end(), header.begin(), header.end());
  }
  c.Send(requests);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  c.Reset();
}

TEST_CASE("a client resetting with 2000 MiB of replies pending does not bring the node down") {
  TempDir dir;
  const std::string file = dir.File("disk.img");
  PluginServer server({"file=" + file, "size=" + std::to_string(kRequests) + "M"},
                      Transport::kTcp4);
  const pid_t pid = server.pid();
  for (int round = 0; round < kRounds; ++round) {
    CAPTURE(round);
    ResetWithRepliesPending(server.port());
    REQUIRE_MESSAGE(server.Running(), "nbdkit exited:\n" << server.stderr_text());
  }
  CHECK_FALSE(Contains(server.stderr_text(), "Assertion"));
  // The same process serves a new client: write, read back, flush.
  CHECK(server.pid() == pid);
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(server.uri()));
  const Bytes data = RandomBytes(64 * kKiB, 13);
  CHECK_NBD_OK(c.Pwrite(data, 5 * kMiB));
  CHECK(c.ReadOrThrow(data.size(), 5 * kMiB) == data);
  CHECK_NBD_OK(c.Flush());
  CHECK(ReadFileRange(file, 5 * kMiB, data.size()) == data);
  CHECK(server.Running());
  CHECK(server.pid() == pid);
}

// What the aggregator does when it gives up on a member connection: it
// closes its libnbd handle with reads in flight and their replies unread.
TEST_CASE("a libnbd client closing with 1 MiB reads in flight does not bring the node down") {
  constexpr int kInFlight = 64;
  TempDir dir;
  const std::string file = dir.File("disk.img");
  PluginServer server({"file=" + file, "size=" + std::to_string(kInFlight) + "M"},
                      Transport::kTcp4);
  const pid_t pid = server.pid();
  std::vector<Bytes> buffers(kInFlight, Bytes(kReadSize));
  for (int round = 0; round < kRounds; ++round) {
    CAPTURE(round);
    auto c = std::make_unique<NbdClient>();
    REQUIRE_NBD_OK(c->Connect(server.uri()));
    for (int i = 0; i < kInFlight; ++i)
      REQUIRE(nbd_aio_pread(c->handle(), buffers[i].data(), kReadSize,
                            static_cast<uint64_t>(i) * kReadSize, NBD_NULL_COMPLETION, 0) != -1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c.reset();  // nbd_close: the socket goes with replies unread
    REQUIRE_MESSAGE(server.Running(), "nbdkit exited:\n" << server.stderr_text());
  }
  CHECK_FALSE(Contains(server.stderr_text(), "Assertion"));
  NbdClient c;
  REQUIRE_NBD_OK(c.Connect(server.uri()));
  const Bytes data = RandomBytes(4 * kKiB, 14);
  CHECK_NBD_OK(c.Pwrite(data, 0));
  CHECK(c.ReadOrThrow(data.size(), 0) == data);
  CHECK(server.pid() == pid);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test
