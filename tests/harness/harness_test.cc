// Self-test of dst_test_harness, using only nbdkit's built-in memory plugin so
// that it runs whatever state our own plugin is in.
#include <doctest/doctest.h>
#include <libnbd.h>
#include <sys/stat.h>

#include <csignal>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <thread>

#include "tests/harness/nbd_client.h"
#include "tests/harness/nbdkit_server.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_data.h"

namespace dst::test {
namespace {

using namespace std::chrono_literals;

NbdkitOptions Memory(Transport transport = Transport::kUnix) {
  NbdkitOptions o;
  o.nbdkit = DST_TOOL_NBDKIT;
  o.plugin = "memory";
  o.args = {"size=16M"};
  o.transport = transport;
  return o;
}

bool ProcessExists(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

TEST_CASE("TempDir is created private and removed with its contents") {
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    WriteFile(dir.File("f"), RandomBytes(10, 1));
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("RunCommand captures output and exit code") {
  const CommandResult r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  CHECK(r.exit_code == 3);
  CHECK(r.stdout_text == "out\n");
  CHECK(r.stderr_text == "err\n");
  CHECK(RunCommand({"sh", "-c", "echo $DST_X"}, 5s, {"DST_X=42"}).stdout_text == "42\n");
  CHECK(RunCommand({"sh", "-c", "kill -9 $$"}).exit_code == 128 + SIGKILL);
}

TEST_CASE("RunCommand fails on timeout and on a missing program") {
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(RunCommand({"sleep", "30"}, 200ms), std::runtime_error);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK_THROWS_AS(RunCommand({"/nonexistent/program"}), std::runtime_error);
}

TEST_CASE("Process destructor kills the child and its process group") {
  pid_t pid;
  {
    Process p({"sh", "-c", "sleep 100 & wait"});
    pid = p.pid();
    CHECK(p.Running());
    CHECK_FALSE(p.Wait(50ms).has_value());
  }
  CHECK_FALSE(ProcessExists(pid));
}

TEST_CASE("NbdkitServer serves over a Unix socket and TCP (IPv4, IPv6, IPv4-mapped)") {
  for (Transport t :
       {Transport::kUnix, Transport::kTcp4, Transport::kTcp6, Transport::kTcp4MappedV6}) {
    if (t == Transport::kTcp6 && !Ipv6LoopbackAvailable()) continue;
    if (t == Transport::kTcp4MappedV6 && !Ipv4MappedListenAvailable()) continue;
    CAPTURE(static_cast<int>(t));
    NbdkitServer server(Memory(t));
    {
      // Disconnect before Stop(): nbdkit waits for its clients to leave.
      NbdClient c;
      REQUIRE_MESSAGE(c.Connect(server.uri()).ok(), server.uri());
      CHECK(c.Size() == 16 * 1024 * 1024);
      const Bytes data = RandomBytes(65536, 7);
      CHECK(c.Pwrite(data, 4096).ok());
      CHECK(c.ReadOrThrow(data.size(), 4096) == data);
      std::vector<Extent> map;
      REQUIRE(c.Map(1 << 20, 0, &map).ok());
      REQUIRE(map.size() >= 2);
      CHECK(map[0].offset == 0);
      CHECK(map.back().offset + map.back().length == 1 << 20);
      std::vector<ExportEntry> exports;
      CHECK(NbdClient::ListExports(server.uri(), &exports).ok());
      CHECK(exports.size() == 1);
    }
    const pid_t pid = server.pid();
    CHECK(server.Stop() == 0);
    CHECK_FALSE(ProcessExists(pid));
    CHECK(server.SanitizerReports().empty());
  }
}

TEST_CASE("NbdClient reports errors as errno plus text") {
  NbdkitServer server(Memory());
  NbdClient c;
  REQUIRE(c.Connect(server.uri()).ok());
  Bytes buf(4096);
  const NbdStatus s = c.Pread(buf, 16 * 1024 * 1024);  // past the end
  CHECK(s.err == EINVAL);
  CHECK_FALSE(s.message.empty());
}

TEST_CASE("StartExpectingFailure returns nbdkit's exit code and stderr") {
  NbdkitOptions o = Memory();
  o.args.push_back("nosuchparam=1");
  const StartFailure f = NbdkitServer::StartExpectingFailure(o);
  CHECK(f.exit_code != 0);
  CHECK(f.stderr_text.find("nosuchparam") != std::string::npos);
  CHECK_THROWS_AS(NbdkitServer::StartExpectingFailure(Memory()), std::runtime_error);
  CHECK_THROWS_AS(NbdkitServer{o}, std::runtime_error);
}

// The reason for the rule in nbdkit_server.h: nbdkit's parent-death signal
// follows the thread that started it.
TEST_CASE("NbdkitServer: a server started from a thread that exits goes with it") {
  std::unique_ptr<NbdkitServer> server;
  std::thread starter([&server] { server = std::make_unique<NbdkitServer>(Memory()); });
  starter.join();
  REQUIRE(server != nullptr);
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {  // bounded: 5 s
    gone = !server->Running();
    if (!gone) std::this_thread::sleep_for(10ms);
  }
  CHECK(gone);
  // Restarted from this thread, which outlives it, it stays.
  server->Restart();
  std::this_thread::sleep_for(200ms);
  CHECK(server->Running());
  CHECK(server->Stop() == 0);
}

}  // namespace
}  // namespace dst::test
