// Integration tests for NbdConnection and NbdMember against real nbdkit
// processes (memory plugin, delay filter) on private Unix sockets or loopback
// TCP. Each test starts its own nbdkit; the whole file runs in a few seconds.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/nbd_connection.h"
#include "aggregator/member/nbd_member.h"

extern char** environ;

namespace dst::member {
namespace {

using namespace std::chrono_literals;
using volume::MemberIo;
using volume::MemberOp;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kExportSize = 64 * kMiB;
constexpr int kPending = -1;  // a result slot whose done has not run

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/dst-member-test-XXXXXX";
    if (mkdtemp(pattern) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick).
int FreeTcpPort() {
  const int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 0;
  if (bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(probe);
  return port;
}

enum class Transport { kUnix, kTcp };

// nbdkit serving one export, on a Unix socket or on 127.0.0.1; SIGKILLed and
// reaped when destroyed (--exit-with-parent covers a crashing test). Its
// stderr goes to a log in its directory, shown if it fails to start.
class Nbdkit {
 public:
  // `args`: what follows the common options, e.g. {"memory", "64M"}.
  explicit Nbdkit(const std::vector<std::string>& args, Transport transport = Transport::kUnix)
      : pidfile_(dir_.path() + "/nbdkit.pid"), log_(dir_.path() + "/nbdkit.log") {
    if (transport == Transport::kUnix) {
      socket_ = dir_.path() + "/nbd.sock";
      listen_ = {"-U", socket_};
      uri_ = "nbd+unix:///?socket=" + socket_;
    } else {
      const std::string port = std::to_string(FreeTcpPort());
      listen_ = {"-i", "127.0.0.1", "-p", port};
      uri_ = "nbd://localhost:" + port;
    }
    Start(args);
  }
  ~Nbdkit() { Kill(); }

  bool serving() const { return serving_; }
  const std::string& uri() const { return uri_; }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    serving_ = false;
  }
  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }
  // Kills this nbdkit and starts another on the same socket or port.
  void Restart(const std::vector<std::string>& args) {
    Kill();
    if (!socket_.empty()) unlink(socket_.c_str());  // left behind by SIGKILL
    unlink(pidfile_.c_str());
    Start(args);
  }

 private:
  void Spawn(std::vector<std::string>& argv) {
    std::vector<char*> c_argv;
    for (std::string& arg : argv)
      c_argv.push_back(arg.data());
    c_argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (posix_spawnp(&pid_, "nbdkit", &actions, nullptr, c_argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }

  // nbdkit writes the pidfile once it accepts connections.
  void WaitUntilServing() {
    for (int i = 0; i < 1000; ++i) {
      std::ifstream pidfile(pidfile_);
      pid_t written = 0;
      if (pidfile >> written && written == pid_) {
        serving_ = true;
        return;
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;  // exited: bad arguments, missing plugin, port taken
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  void Start(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"nbdkit", "-f", "--exit-with-parent", "-P", pidfile_};
    argv.insert(argv.end(), listen_.begin(), listen_.end());
    argv.insert(argv.end(), args.begin(), args.end());
    Spawn(argv);
    if (pid_ > 0) WaitUntilServing();
    if (!serving_) MESSAGE("nbdkit did not start; its log:\n" << ReadLog());
  }

  std::string ReadLog() const {
    std::ifstream log(log_);
    return std::string(std::istreambuf_iterator<char>(log), std::istreambuf_iterator<char>());
  }

  TempDir dir_;
  std::string pidfile_;
  std::string log_;
  std::string socket_;               // "" for TCP
  std::vector<std::string> listen_;  // -U SOCKET or -i ADDR -p PORT
  std::string uri_;
  pid_t pid_ = -1;
  bool serving_ = false;
};

// Runs `io` until `finished` or `limit`; false on timeout.
bool RunUntil(asio::io_context& io, const std::function<bool()>& finished,
              std::chrono::milliseconds limit) {
  if (io.stopped()) io.restart();
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!finished()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    io.run_one_for(deadline - now);
  }
  return true;
}

// Runs `io` for `duration`, whatever happens.
void RunFor(asio::io_context& io, std::chrono::milliseconds duration) {
  RunUntil(
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

// A connected NbdMember over its own nbdkit memory export.
struct MemberFixture {
  explicit MemberFixture(unsigned connections = 1,
                         std::vector<std::string> args = {"memory", "64M"},
                         TransactionOptions options = {})
      : server(args) {
    REQUIRE(server.serving());
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
  Nbdkit server;
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

TEST_CASE("an I/O longer than max_request fails with EINVAL") {
  MemberFixture fixture;
  const uint64_t too_long = uint64_t{fixture.member().capabilities().max_request} + 1;
  std::vector<uint8_t> buffer(too_long);
  CHECK(fixture.Run(MemberOp::kRead, 0, too_long, buffer.data()) == EINVAL);
  CHECK(fixture.Run(MemberOp::kWrite, 0, too_long, buffer.data()) == EINVAL);
  CHECK(fixture.Run(MemberOp::kRead, 0, 4096, buffer.data()) == 0);  // still usable
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

TEST_CASE("ConnectAll gives up on a server that never answers") {
  TempDir dir;
  // A socket that accepts connections (backlog) but never speaks NBD.
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

TEST_CASE("every in-flight I/O fails with EIO when the server is gone for the retry window") {
  TransactionOptions options;
  options.io_timeout = 500ms;
  options.retry_window = 1000ms;
  MemberFixture fixture(/*connections=*/2,
                        {"--filter=delay", "memory", "64M", "rdelay=5", "wdelay=5"}, options);
  constexpr int kIos = 32;
  std::vector<std::vector<uint8_t>> buffers(kIos, std::vector<uint8_t>(64 * 1024, 0x11));
  std::vector<int> results(kIos, kPending);
  for (int i = 0; i < kIos; ++i) {
    const MemberOp op = i % 2 == 0 ? MemberOp::kRead : MemberOp::kWrite;
    fixture.member().Submit(
        MakeIo(op, i * buffers[i].size(), buffers[i].size(), buffers[i].data(), &results[i]));
  }
  RunFor(fixture.io, 200ms);  // let the requests reach the server
  REQUIRE(fixture.member().in_flight() == kIos);

  const auto start = std::chrono::steady_clock::now();
  fixture.server.Kill();
  REQUIRE(RunUntil(
      fixture.io, [&] { return AllDone(results); }, 10s));
  // Within the retry window plus one I/O timeout, not the 5 s delay.
  CHECK(std::chrono::steady_clock::now() - start < 2000ms);
  for (int result : results)
    CHECK(result == EIO);
  CHECK(fixture.member().in_flight() == 0);
  CHECK(fixture.member().counters().failures == kIos);

  // Unreachable for the whole window, the member is failed: new I/O fails
  // at once instead of waiting.
  REQUIRE(RunUntil(
      fixture.io, [&] { return fixture.member().state() == NbdMember::State::kFailed; }, 3s));
  const auto flush_start = std::chrono::steady_clock::now();
  CHECK(fixture.Run(MemberOp::kFlush, 0, 0) == EIO);
  CHECK(std::chrono::steady_clock::now() - flush_start < 200ms);
  CHECK(fixture.last_io->failure.find("member is failed") != std::string::npos);
}

// NbdConnection directly, over nbdkit with reads delayed by one second.
struct SlowReadFixture {
  SlowReadFixture() : server({"--filter=delay", "memory", "64M", "rdelay=1"}) {
    REQUIRE(server.serving());
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

  Nbdkit server;
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
  fixture.server.Kill();
  REQUIRE(RunUntil(
      fixture.io, [&] { return fixture.connection->dead(); }, 5s));
  CHECK_FALSE(fixture.connection->ready());
  // CLOSED ("server closed the connection") when EOF falls between replies,
  // DEAD ("recv: server disconnected unexpectedly") when it cuts one.
  CHECK_FALSE(fixture.connection->last_error().empty());
}

TEST_CASE("NbdMember works over TCP") {
  Nbdkit server({"memory", "64M"}, Transport::kTcp);
  REQUIRE(server.serving());
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
  const std::string uri = "nbd://127.0.0.1:" + std::to_string(FreeTcpPort());
  std::vector<std::unique_ptr<NbdMember>> members;
  members.push_back(std::make_unique<NbdMember>(io, uri, 1));
  const Status status = NbdMember::ConnectAll(io, members, 5000ms);
  CHECK(status.err() == ECONNREFUSED);
  CHECK(status.message().find("member " + uri + ": ") == 0);
  CHECK(status.message().find("Connection refused") != std::string::npos);
}

// DST transactions: resends, reconnects, identity, keepalive.

TransactionOptions FastOptions() {
  TransactionOptions options;
  options.io_timeout = 500ms;
  options.retry_window = 10000ms;
  options.keepalive = 0ms;
  return options;
}

TEST_CASE("a server restarted on the same socket gets the in-flight I/O again") {
  const std::vector<std::string> slow = {"--filter=delay", "memory", "64M", "wdelay=300ms"};
  MemberFixture fixture(/*connections=*/1, slow, FastOptions());
  constexpr int kIos = 8;
  std::vector<std::vector<uint8_t>> buffers(kIos, std::vector<uint8_t>(64 * 1024, 0x5A));
  std::vector<int> results(kIos, kPending);
  for (int i = 0; i < kIos; ++i)
    fixture.member().Submit(MakeIo(MemberOp::kWrite, i * buffers[i].size(), buffers[i].size(),
                                   buffers[i].data(), &results[i]));
  RunFor(fixture.io, 100ms);
  REQUIRE(fixture.member().in_flight() == kIos);

  fixture.server.Restart({"memory", "64M"});
  REQUIRE(fixture.server.serving());
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

TEST_CASE("a server that comes back as another export is refused") {
  MemberFixture fixture(/*connections=*/1, {"memory", "64M"}, FastOptions());
  fixture.server.Restart({"memory", "32M"});
  REQUIRE(fixture.server.serving());
  // The next I/O meets the dead connection, and the reconnect finds 32M.
  std::vector<uint8_t> data(4096, 1);
  CHECK(fixture.Run(MemberOp::kWrite, 0, data.size(), data.data()) == EIO);
  CHECK(fixture.member().state() == NbdMember::State::kFailed);
  CHECK(fixture.last_io->failure.find("refused: came back with size 33554432, was 67108864") !=
        std::string::npos);
  CHECK(fixture.member().counters().connect_failures >= 1);
}

TEST_CASE("keepalive pings find a server that stopped answering while idle") {
  TransactionOptions options = FastOptions();
  options.keepalive = 200ms;
  options.io_timeout = 300ms;
  MemberFixture fixture(/*connections=*/1, {"memory", "64M"}, options);
  RunFor(fixture.io, 300ms);
  CHECK(fixture.member().counters().pings >= 1);
  CHECK(fixture.member().state() == NbdMember::State::kReady);

  fixture.server.Signal(SIGSTOP);
  const bool noticed = RunUntil(
      fixture.io, [&] { return fixture.member().state() == NbdMember::State::kReconnecting; }, 3s);
  fixture.server.Signal(SIGCONT);
  REQUIRE(noticed);
  CHECK(fixture.member().counters().timeouts >= 1);
  CHECK(fixture.member().counters().ios == 0);  // no client I/O was involved
  REQUIRE(RunUntil(
      fixture.io, [&] { return fixture.member().state() == NbdMember::State::kReady; }, 5s));
}

TEST_CASE("error answers are resent until they succeed") {
  MemberFixture fixture(/*connections=*/1,
                        {"--filter=error", "memory", "64M", "error-pwrite-rate=30%", "error=EIO"},
                        FastOptions());
  std::mt19937_64 rng(7);
  for (int i = 0; i < 16; ++i) {
    std::vector<uint8_t> data = RandomBytes(rng, 4096);
    REQUIRE(fixture.Run(MemberOp::kWrite, i * 4096, data.size(), data.data()) == 0);
    std::vector<uint8_t> back(4096);
    REQUIRE(fixture.Run(MemberOp::kRead, i * 4096, back.size(), back.data()) == 0);
    CHECK(back == data);
  }
  CHECK(fixture.member().counters().errors >= 1);
  CHECK(fixture.member().counters().resends == fixture.member().counters().errors);
  CHECK(fixture.member().counters().reconnects == 0);
}

TEST_CASE("a flush answered with EIO fails at once") {
  // nbdkit's error filter cannot fail flushes; the eval plugin can.
  MemberFixture fixture(/*connections=*/1,
                        {"eval", "get_size=echo 64M", "pread=exit 1", "can_flush=exit 0",
                         "flush=echo EIO flush failed >&2; exit 1"},
                        FastOptions());
  CHECK(fixture.Run(MemberOp::kFlush, 0, 0) == EIO);
  CHECK(fixture.member().counters().resends == 0);
  CHECK(fixture.last_io->failure.find("member answered: Input/output error") != std::string::npos);
}

}  // namespace
}  // namespace dst::member
