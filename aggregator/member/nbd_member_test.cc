// Integration tests for NbdConnection and NbdMember against real nbdkit
// processes (memory plugin, filters, the dst plugin) started through the
// shared test harness (tests/harness), on private Unix sockets or loopback
// TCP: what needs real libnbd and real servers (the handshake, TCP, a real
// restart, block status, the largest request, a log line from a real refused
// reconnect). The transaction rules themselves are unit-tested on the
// MemberEnv seam in nbd_member_rules_test.cc.
#include <doctest/doctest.h>
#include <libnbd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/nbd_connection.h"
#include "aggregator/member/nbd_member.h"
#include "common/run_until.h"
#include "tests/harness/nbdkit_server.h"
#include "tests/harness/stderr_capture.h"
#include "tests/harness/temp_dir.h"

namespace dst::member::nbd_member_test {
namespace {

using namespace std::chrono_literals;
using test::NbdkitOptions;
using test::NbdkitServer;
using test::StderrCapture;
using test::TempDir;
using test::Transport;
using volume::MemberIo;
using volume::MemberOp;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kExportSize = 64 * kMiB;
constexpr int kPending = -1;  // a result slot whose done has not run

// nbdkit's memory plugin, 64 MiB, behind `filters` (outermost first) with
// their `params`.
NbdkitOptions Memory(std::vector<std::string> filters = {}, std::vector<std::string> params = {},
                     Transport transport = Transport::kUnix) {
  NbdkitOptions options;
  options.plugin = "memory";
  options.args = {"size=64M"};
  options.args.insert(options.args.end(), params.begin(), params.end());
  for (const std::string& filter : filters)
    options.nbdkit_flags.push_back("--filter=" + filter);
  options.transport = transport;
  options.sanitizer_runtimes = false;  // nbdkit's own plugin and filters only
  return options;
}

// SIGKILL, as a crash, and wait until it is gone (bounded).
void KillHard(NbdkitServer& server) {
  server.Kill(SIGKILL);
  for (int i = 0; i < 500 && server.Running(); ++i)
    std::this_thread::sleep_for(10ms);
  REQUIRE_FALSE(server.Running());
}

// Runs `io` until `finished` or `limit`; false on timeout.
bool RunUntil(asio::io_context& io, const std::function<bool()>& finished,
              std::chrono::milliseconds limit) {
  return dst::RunUntil(io, finished, limit) == RunResult::kDone;
}

// Runs `io` for `duration`, whatever happens.
void RunFor(asio::io_context& io, std::chrono::milliseconds duration) {
  dst::RunUntil(
      io, [] { return false; }, duration);
}

// An I/O whose done stores its errno into *result.
std::shared_ptr<MemberIo> MakeIo(MemberOp op, uint64_t offset, uint64_t length, uint8_t* data,
                                 int* result) {
  auto io = std::make_shared<MemberIo>();
  io->op = op;
  io->offset = offset;
  io->length = length;
  io->data = data;
  *result = kPending;
  io->done = [result](int err) { *result = err; };
  return io;
}

bool AllDone(const std::vector<int>& results) {
  return std::none_of(results.begin(), results.end(), [](int r) { return r == kPending; });
}

// A connected NbdMember over its own nbdkit export.
struct MemberFixture {
  explicit MemberFixture(unsigned connections = 1, NbdkitOptions server_options = Memory(),
                         TransactionOptions options = {})
      : server(std::move(server_options)) {
    members.push_back(std::make_unique<NbdMember>(io, server.uri(), connections, options));
    const Status status = NbdMember::ConnectAll(io, members, 5000ms);
    REQUIRE_MESSAGE(status.ok(), status.ToString());
  }

  NbdMember& member() { return *members.front(); }

  // Submits one I/O and runs the loop until it is done; returns its errno.
  int Run(MemberOp op, uint64_t offset, uint64_t length, uint8_t* data = nullptr,
          std::function<void(MemberIo&)> adjust = nullptr) {
    int result = kPending;
    auto io = MakeIo(op, offset, length, data, &result);
    if (adjust) adjust(*io);
    last_io = io;
    member().Submit(std::move(io));
    REQUIRE(RunUntil(
        io_context(), [&] { return result != kPending; }, 10s));
    return result;
  }

  asio::io_context& io_context() { return io; }

  // Declaration order is destruction order reversed: members go before the
  // io_context they post to, and the server last.
  NbdkitServer server;
  asio::io_context io;
  std::vector<std::unique_ptr<NbdMember>> members;
  std::shared_ptr<MemberIo> last_io;
};

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t length) {
  std::vector<uint8_t> bytes(length);
  for (uint8_t& byte : bytes)
    byte = static_cast<uint8_t>(rng());
  return bytes;
}

TEST_CASE("NbdMember connects and reports the export's capabilities") {
  MemberFixture fixture(/*connections=*/4);
  const volume::MemberCapabilities& caps = fixture.member().capabilities();
  CHECK(caps.size == kExportSize);
  CHECK_FALSE(caps.read_only);
  CHECK(caps.can_flush);
  CHECK(caps.can_fua);
  CHECK(caps.can_trim);
  CHECK(caps.can_zero);
  CHECK(caps.can_multi_conn);
  CHECK(caps.can_block_status);
  CHECK(caps.min_block >= 1);
  CHECK(caps.max_request > 0);
  CHECK(caps.max_request <= kMaxRequestBytes);
  // memory advertises multi-conn, so every requested connection is opened.
  CHECK(fixture.member().connection_count() == 4);
  CHECK(fixture.member().name() == fixture.server.uri());
}

TEST_CASE("concurrent random writes then reads match an in-memory model") {
  MemberFixture fixture(/*connections=*/4);
  std::mt19937_64 rng(20240601);
  std::vector<uint8_t> model(kExportSize, 0);
  constexpr int kIos = 64;

  // Each write stays inside its own MiB, so concurrent writes never overlap
  // and the model does not depend on their order.
  std::vector<std::vector<uint8_t>> write_buffers(kIos);
  std::vector<int> write_results(kIos, kPending);
  for (int i = 0; i < kIos; ++i) {
    const uint64_t slot = i * kMiB;
    const uint64_t offset = slot + rng() % kMiB;
    const uint64_t length = 1 + rng() % (slot + kMiB - offset);
    write_buffers[i] = RandomBytes(rng, length);
    std::copy(write_buffers[i].begin(), write_buffers[i].end(), model.begin() + offset);
    fixture.member().Submit(
        MakeIo(MemberOp::kWrite, offset, length, write_buffers[i].data(), &write_results[i]));
  }
  CHECK(fixture.member().in_flight() == kIos);  // all submitted before any completes
  REQUIRE(RunUntil(
      fixture.io, [&] { return AllDone(write_results); }, 10s));
  for (int result : write_results)
    CHECK(result == 0);

  std::vector<std::vector<uint8_t>> read_buffers(kIos);
  std::vector<uint64_t> read_offsets(kIos);
  std::vector<int> read_results(kIos, kPending);
  for (int i = 0; i < kIos; ++i) {
    const uint64_t length = 1 + rng() % kMiB;
    read_offsets[i] = rng() % (kIos * kMiB - length);
    read_buffers[i].assign(length, 0xEE);
    fixture.member().Submit(
        MakeIo(MemberOp::kRead, read_offsets[i], length, read_buffers[i].data(), &read_results[i]));
  }
  REQUIRE(RunUntil(
      fixture.io, [&] { return AllDone(read_results); }, 10s));
  CHECK(fixture.member().in_flight() == 0);
  for (int i = 0; i < kIos; ++i) {
    CHECK(read_results[i] == 0);
    CHECK(std::equal(read_buffers[i].begin(), read_buffers[i].end(),
                     model.begin() + read_offsets[i]));
  }
}

TEST_CASE("FUA write, flush, trim and zero") {
  MemberFixture fixture;
  std::vector<uint8_t> pattern(2 * kMiB, 0xAB);
  std::vector<uint8_t> readback(2 * kMiB, 0);

  CHECK(fixture.Run(MemberOp::kWrite, 0, pattern.size(), pattern.data(),
                    [](MemberIo& io) { io.fua = true; }) == 0);
  CHECK(fixture.Run(MemberOp::kRead, 0, readback.size(), readback.data()) == 0);
  CHECK(readback == pattern);
  CHECK(fixture.Run(MemberOp::kFlush, 0, 0) == 0);

  CHECK(fixture.Run(MemberOp::kTrim, 0, kMiB) == 0);
  CHECK(fixture.Run(MemberOp::kZero, kMiB, kMiB) == 0);  // NO_HOLE: may_trim is false
  CHECK(fixture.Run(MemberOp::kRead, 0, readback.size(), readback.data()) == 0);
  CHECK(std::all_of(readback.begin(), readback.end(), [](uint8_t b) { return b == 0; }));

  if (fixture.member().capabilities().can_fast_zero) {
    CHECK(fixture.Run(MemberOp::kZero, 0, kMiB, nullptr, [](MemberIo& io) {
      io.fast_zero = true;
      io.may_trim = true;
    }) == 0);
  }
  CHECK(fixture.Run(MemberOp::kCache, 0, kMiB) == 0);
}

TEST_CASE("block status shows data where written and zeros after trim") {
  MemberFixture fixture;
  std::vector<uint8_t> pattern(4 * kMiB, 0x5A);
  const uint64_t offset = 8 * kMiB;
  REQUIRE(fixture.Run(MemberOp::kWrite, offset, pattern.size(), pattern.data()) == 0);

  REQUIRE(fixture.Run(MemberOp::kBlockStatus, offset, kMiB) == 0);
  std::vector<volume::AllocationExtent> extents = fixture.last_io->extents;
  REQUIRE_FALSE(extents.empty());
  CHECK(extents.front().flags == 0);  // allocated data

  REQUIRE(fixture.Run(MemberOp::kTrim, offset, pattern.size()) == 0);
  REQUIRE(fixture.Run(MemberOp::kBlockStatus, offset, pattern.size()) == 0);
  extents = fixture.last_io->extents;
  REQUIRE_FALSE(extents.empty());
  CHECK((extents.front().flags & LIBNBD_STATE_ZERO) != 0);
  uint64_t covered = 0;
  for (const volume::AllocationExtent& extent : extents)
    covered += extent.length;
  CHECK(covered > 0);
  CHECK(covered <= pattern.size());  // clipped to the request
}

TEST_CASE("an I/O that libnbd refuses at once still completes through done") {
  MemberFixture fixture;
  std::vector<uint8_t> buffer(4096);
  int result = kPending;
  // Past the end of the export: libnbd rejects it before sending anything.
  fixture.member().Submit(
      MakeIo(MemberOp::kRead, kExportSize - 1, buffer.size(), buffer.data(), &result));
  CHECK(result == kPending);  // never synchronous
  REQUIRE(RunUntil(
      fixture.io, [&] { return result != kPending; }, 1s));
  CHECK(result == EINVAL);
  CHECK(fixture.member().in_flight() == 0);
}

TEST_CASE("a max_request write and read round-trip") {
  MemberFixture fixture;
  const uint32_t size = fixture.member().capabilities().max_request;
  std::mt19937_64 rng(7);
  std::vector<uint8_t> written = RandomBytes(rng, size);
  std::vector<uint8_t> read(size, 0);
  CHECK(fixture.Run(MemberOp::kWrite, 0, size, written.data()) == 0);
  CHECK(fixture.Run(MemberOp::kRead, 0, size, read.data()) == 0);
  CHECK(read == written);
}

TEST_CASE("connecting to a missing socket fails with the member's URI") {
  TempDir dir;
  asio::io_context io;
  const std::string uri = "nbd+unix:///?socket=" + dir.path() + "/missing.sock";
  std::vector<std::unique_ptr<NbdMember>> members;
  members.push_back(std::make_unique<NbdMember>(io, uri, 1));
  const Status status = NbdMember::ConnectAll(io, members, 5000ms);
  CHECK(status.err() == ENOENT);
  CHECK(status.message() == "member " + uri + ": connect: No such file or directory");

  int result = kPending;
  members.front()->Submit(MakeIo(MemberOp::kFlush, 0, 0, nullptr, &result));
  CHECK(result == kPending);  // never synchronous
  REQUIRE(RunUntil(
      io, [&] { return result != kPending; }, 1s));
  CHECK(result == EIO);
  CHECK(members.front()->state() == NbdMember::State::kFailed);
}

TEST_CASE("ConnectAll gives up on a server that never speaks NBD") {
  TempDir dir;
  // A socket that accepts connections (backlog) but never speaks NBD: libnbd
  // waits in the handshake, and the member is destroyed while connecting.
  const std::string path = dir.path() + "/silent.sock";
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(listen(listener, 8) == 0);

  asio::io_context io;
  const std::string uri = "nbd+unix:///?socket=" + path;
  std::vector<std::unique_ptr<NbdMember>> members;
  members.push_back(std::make_unique<NbdMember>(io, uri, 1));
  const auto start = std::chrono::steady_clock::now();
  const Status status = NbdMember::ConnectAll(io, members, 300ms);
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  CHECK(status.err() == ETIMEDOUT);
  CHECK(status.message().find("member " + uri + ": connect timed out") == 0);
  members.clear();
  close(listener);
}

// NbdConnection directly, over nbdkit with reads delayed by one second.
struct SlowReadFixture {
  SlowReadFixture() : server(Memory({"delay"}, {"rdelay=1"})) {
    connection = std::make_unique<NbdConnection>(io, server.uri());
    Status status = Status::Error(EINPROGRESS, "pending");
    bool connected = false;
    connection->AsyncConnect([&](Status s) {
      status = std::move(s);
      connected = true;
    });
    CHECK_FALSE(connected);  // never synchronous
    REQUIRE(RunUntil(
        io, [&] { return connected; }, 5s));
    REQUIRE_MESSAGE(status.ok(), status.ToString());
    REQUIRE(connection->ready());
  }

  NbdkitServer server;
  asio::io_context io;
  std::unique_ptr<NbdConnection> connection;
};

TEST_CASE("a slow read does not hold up other I/O on the same connection") {
  SlowReadFixture fixture;
  std::vector<uint8_t> read_buffer(4096);
  std::vector<uint8_t> write_buffer(4096, 0x77);
  int read_result = kPending;
  int write_result = kPending;
  const auto start = std::chrono::steady_clock::now();
  fixture.connection->Submit(
      MakeIo(MemberOp::kRead, 0, read_buffer.size(), read_buffer.data(), &read_result));
  fixture.connection->Submit(
      MakeIo(MemberOp::kWrite, kMiB, write_buffer.size(), write_buffer.data(), &write_result));
  CHECK(fixture.connection->in_flight() == 2);

  REQUIRE(RunUntil(
      fixture.io, [&] { return write_result != kPending; }, 5s));
  CHECK(write_result == 0);
  CHECK(read_result == kPending);  // still waiting on the server
  CHECK(std::chrono::steady_clock::now() - start < 800ms);

  REQUIRE(RunUntil(
      fixture.io, [&] { return read_result != kPending; }, 5s));
  CHECK(read_result == 0);
  CHECK(std::chrono::steady_clock::now() - start >= 900ms);
  CHECK(fixture.connection->in_flight() == 0);
}

TEST_CASE("closing or destroying a connection completes its in-flight I/O") {
  SlowReadFixture fixture;
  std::vector<uint8_t> buffer(4096);
  int result = kPending;

  SUBCASE("Close") {
    fixture.connection->Submit(MakeIo(MemberOp::kRead, 0, buffer.size(), buffer.data(), &result));
    RunFor(fixture.io, 50ms);
    fixture.connection->Close();
    CHECK_FALSE(fixture.connection->ready());
    CHECK_FALSE(fixture.connection->dead());
  }
  SUBCASE("destructor") {
    fixture.connection->Submit(MakeIo(MemberOp::kRead, 0, buffer.size(), buffer.data(), &result));
    RunFor(fixture.io, 50ms);
    fixture.connection.reset();
  }
  CHECK(result == kPending);  // posted, not called from inside Close()
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(RunUntil(
      fixture.io, [&] { return result != kPending; }, 5s));
  CHECK(result == ENOTCONN);
  CHECK(std::chrono::steady_clock::now() - start < 500ms);
}

TEST_CASE("a connection reports its death") {
  SlowReadFixture fixture;
  fixture.server.Kill(SIGKILL);
  REQUIRE(RunUntil(
      fixture.io, [&] { return fixture.connection->dead(); }, 5s));
  CHECK_FALSE(fixture.connection->ready());
  // CLOSED ("server closed the connection") when EOF falls between replies,
  // DEAD ("recv: server disconnected unexpectedly") when it cuts one.
  CHECK_FALSE(fixture.connection->last_error().empty());
}

TEST_CASE("NbdMember works over TCP") {
  NbdkitServer server(Memory({}, {}, Transport::kTcp4));
  asio::io_context io;
  std::vector<std::unique_ptr<NbdMember>> members;
  members.push_back(std::make_unique<NbdMember>(io, server.uri(), 2));
  const Status status = NbdMember::ConnectAll(io, members, 5000ms);
  REQUIRE_MESSAGE(status.ok(), status.ToString());
  CHECK(members.front()->capabilities().size == kExportSize);
  CHECK(members.front()->connection_count() == 2);

  std::vector<uint8_t> written(kMiB, 0x3C);
  std::vector<uint8_t> read(kMiB, 0);
  int write_result = kPending;
  int read_result = kPending;
  members.front()->Submit(MakeIo(MemberOp::kWrite, kMiB, kMiB, written.data(), &write_result));
  REQUIRE(RunUntil(
      io, [&] { return write_result != kPending; }, 5s));
  members.front()->Submit(MakeIo(MemberOp::kRead, kMiB, kMiB, read.data(), &read_result));
  REQUIRE(RunUntil(
      io, [&] { return read_result != kPending; }, 5s));
  CHECK(write_result == 0);
  CHECK(read_result == 0);
  CHECK(read == written);
}

TEST_CASE("a refused TCP connection fails with the member's URI") {
  asio::io_context io;
  const std::string uri = "nbd://127.0.0.1:" + std::to_string(test::PickFreePort());
  std::vector<std::unique_ptr<NbdMember>> members;
  members.push_back(std::make_unique<NbdMember>(io, uri, 1));
  const Status status = NbdMember::ConnectAll(io, members, 5000ms);
  CHECK(status.err() == ECONNREFUSED);
  CHECK(status.message().find("member " + uri + ": ") == 0);
  CHECK(status.message().find("Connection refused") != std::string::npos);
}

// DST transactions against real servers.

TransactionOptions FastOptions() {
  TransactionOptions options;
  options.io_timeout = 500ms;
  options.retry_window = 10000ms;
  options.keepalive = 0ms;
  return options;
}

TEST_CASE("a server restarted on the same socket gets the in-flight I/O again") {
  MemberFixture fixture(/*connections=*/1, Memory({"delay"}, {"wdelay=300ms"}), FastOptions());
  constexpr int kIos = 8;
  std::vector<std::vector<uint8_t>> buffers(kIos, std::vector<uint8_t>(64 * 1024, 0x5A));
  std::vector<int> results(kIos, kPending);
  for (int i = 0; i < kIos; ++i)
    fixture.member().Submit(MakeIo(MemberOp::kWrite, i * buffers[i].size(), buffers[i].size(),
                                   buffers[i].data(), &results[i]));
  RunFor(fixture.io, 100ms);
  REQUIRE(fixture.member().in_flight() == kIos);

  KillHard(fixture.server);
  fixture.server.Restart(Memory());
  REQUIRE(RunUntil(
      fixture.io, [&] { return AllDone(results); }, 10s));
  for (int result : results)
    CHECK(result == 0);
  const MemberCounters& counters = fixture.member().counters();
  CHECK(counters.reconnects == 1);
  CHECK(counters.resends == kIos);
  CHECK(counters.failures == 0);
  CHECK(fixture.member().state() == NbdMember::State::kReady);
  CHECK(fixture.member().epoch() > 1);
  // The restarted server holds what was resent.
  std::vector<uint8_t> back(64 * 1024);
  CHECK(fixture.Run(MemberOp::kRead, 3 * back.size(), back.size(), back.data()) == 0);
  CHECK(back == buffers[3]);
}

// A member advertising a 512-byte maximum request (audit W16) behind a slow
// disk: many small member I/Os, of which never more than the bound are in
// flight, none timing out although the whole takes longer than io_timeout.
TEST_CASE("a member with a tiny maximum request gets bounded fan-out and one warning") {
  NbdkitOptions server_options = Memory(
      {"blocksize-policy", "delay"},
      {"blocksize-minimum=512", "blocksize-preferred=512", "blocksize-maximum=512", "rdelay=4ms"});
  server_options.nbdkit_flags.push_back("--threads=2");
  TransactionOptions options = FastOptions();
  options.io_timeout = 1s;
  options.max_in_flight = 4;
  std::string log;
  std::unique_ptr<MemberFixture> fixture;
  {
    StderrCapture capture;
    fixture = std::make_unique<MemberFixture>(1, server_options, options);
    log = capture.Text();
  }
  NbdMember& member = fixture->member();
  REQUIRE(member.capabilities().max_request == 512);
  CHECK_MESSAGE(log.find("maximum request size is 512 bytes (under 64 KiB)") != std::string::npos,
                log);

  // 384 KiB in 512-byte pieces: written, then read back (each read 4 ms in
  // a server with 2 threads: about 1.5 s in all).
  constexpr size_t kPieces = 768;
  std::mt19937_64 rng(16);
  std::vector<uint8_t> written = RandomBytes(rng, kPieces * 512);
  std::vector<uint8_t> read(written.size(), 0);
  size_t most_in_flight = 0;
  for (MemberOp op : {MemberOp::kWrite, MemberOp::kRead}) {
    std::vector<int> results(kPieces, kPending);
    uint8_t* base = op == MemberOp::kWrite ? written.data() : read.data();
    for (size_t i = 0; i < kPieces; ++i)
      member.Submit(MakeIo(op, i * 512, 512, base + i * 512, &results[i]));
    REQUIRE(RunUntil(
        fixture->io,
        [&] {
          most_in_flight = std::max(most_in_flight, member.in_flight());
          return AllDone(results);
        },
        30s));
    CHECK(std::count(results.begin(), results.end(), 0) == kPieces);
  }
  CHECK(read == written);
  CHECK(most_in_flight == 4);
  CHECK(member.counters().timeouts == 0);
  CHECK(member.counters().reconnects == 0);
}

// Audit W5: the session in a fenced export name lets any client that may
// open the export join the member's fence; it must not reach the logs.
// Here the node comes back without the export, and the dst plugin refuses
// the fenced name, which libnbd quotes in its message too.
TEST_CASE("a refused fenced reconnect is logged without the session") {
  TempDir dir;
  NbdkitOptions node;
  node.plugin = DST_PLUGIN_PATH;
  node.args = {"file=" + dir.File("disk0.img"), "size=16M", "name=disk0"};
  NbdkitServer server(node);
  asio::io_context io;
  std::vector<std::unique_ptr<NbdMember>> members;
  TransactionOptions options = FastOptions();
  options.io_timeout = 1s;
  members.push_back(std::make_unique<NbdMember>(io, server.uri("disk0"), 1, options));
  const Status status = NbdMember::ConnectAll(io, members, 5000ms);
  REQUIRE_MESSAGE(status.ok(), status.ToString());
  NbdMember& member = *members.front();
  REQUIRE(member.fenced());

  KillHard(server);
  node.args = {"file=" + dir.File("other.img"), "size=16M", "name=other"};
  server.Restart(node);
  std::string log;
  {
    StderrCapture capture;
    REQUIRE(RunUntil(
        io, [&] { return member.counters().connect_failures >= 1; }, 10s));
    log = capture.Text();
  }
  CHECK_MESSAGE(log.find("reconnect attempt 1 failed: server refused export "
                         "'disk0@dst-fence:...:2'") != std::string::npos,
                log);
  CHECK_MESSAGE(log.find("has no export named 'disk0@dst-fence:...:2'") != std::string::npos, log);
  // A session is 32 hex digits; nothing else in these lines is that long.
  CHECK_MESSAGE(!std::regex_search(log, std::regex("[0-9a-f]{32}")), log);
  members.clear();
  CHECK(server.Stop() == 0);
}

}  // namespace
}  // namespace dst::member::nbd_member_test
