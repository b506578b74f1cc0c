// dst-aggregator's connection slots and local files against the audit's
// attacks: idle clients from one address (X12), idle connections to the
// metrics endpoint and the control socket (C7, C3), running out of file
// descriptors (X13), --control and --unix naming a regular file (C5), and
// clients that leave exactly at the handshake deadline. In every case a
// client connected beforehand keeps reading and writing, and the aggregator
// ends without a sanitizer report.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <thread>

#include "common/nbd_protocol.h"
#include "tests/harness/aggregator_process.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/raw_client.h"
#include "tests/integration/raw_volume_fixture.h"

namespace dst::test::aggregator_slots_test {
namespace {

using namespace std::chrono_literals;
namespace nbd = ::dst::nbd;

constexpr uint64_t kVolumeSize = RawVolumeFixture::kVolumeSize;

class SlotsFixture : public RawVolumeFixture {
 public:
  SlotsFixture() : RawVolumeFixture("dst-agg-slots") {}
};

// A 4 KiB read on a raw client after GO, with simple replies.
void CheckRawRead(RawClient& raw, uint64_t cookie) {
  raw.SendRequest(Request(nbd::kCmdRead, 0, 4096, cookie));
  const nbd::SimpleReply reply = raw.ReadSimpleReply();
  CHECK(reply.error == 0);
  CHECK(reply.cookie == cookie);
  Bytes data(4096);
  raw.RecvOrThrow(data);
}

// Everything the server sends until it closes the connection.
std::string ReadToEnd(int port, const std::string& request) {
  RawClient raw(port, 10s);
  raw.Send({reinterpret_cast<const uint8_t*>(request.data()), request.size()});
  std::string answer;
  uint8_t byte;
  while (raw.Recv({&byte, 1}))
    answer.push_back(static_cast<char>(byte));
  return answer;
}

// CPU time the process has used so far, user and system.
std::chrono::milliseconds CpuTime(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field numbers as in proc(5)
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return std::chrono::milliseconds((utime + stime) * 1000 / ::sysconf(_SC_CLK_TCK));
}

TEST_SUITE_BEGIN("aggregator_slots");

// Opens `n` clients that complete GO and then idle; those the server turns
// away go to *refused.
std::vector<std::unique_ptr<RawClient>> IdleClients(
    const AggregatorServer& agg, int n, std::vector<std::unique_ptr<RawClient>>* refused) {
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < n; ++i) {
    auto raw = std::make_unique<RawClient>(agg.port(), 5s);
    uint8_t hello[18];
    if (!raw->Recv(hello)) {
      refused->push_back(std::move(raw));
      continue;
    }
    uint8_t flags[4];
    nbd::StoreBE32(flags, nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
    raw->Send(flags);
    REQUIRE(raw->Go("vol0").size == kVolumeSize);
    idle.push_back(std::move(raw));
  }
  return idle;
}

// The audit's X12: 20 clients that completed GO and idle held every slot of
// --max-connections 20, for good.
TEST_CASE_FIXTURE(SlotsFixture, "idle clients from one address cannot take every slot") {
  AggregatorServer& agg = Start({"--max-connections", "20"});
  std::vector<std::unique_ptr<RawClient>> refused;
  std::vector<std::unique_ptr<RawClient>> idle = IdleClients(agg, 20, &refused);
  // Three quarters of the 20 slots for one address.
  CHECK(idle.size() == 15);
  CHECK(refused.size() == 5);
  CHECK(LogShows(agg, "connections already open from 127.0.0.1 (--max-connections-per-address)"));
  // Another host still gets in, and is served.
  RawClient other(agg.port(), "127.0.0.2");
  other.Greet();
  REQUIRE(other.Go("vol0").size == kVolumeSize);
  CheckRawRead(other, 1);
  CheckRawRead(*idle.front(), 2);  // the idle ones were only idle
}

TEST_CASE_FIXTURE(SlotsFixture, "--max-connections-per-address sets the share of one address") {
  AggregatorServer& agg = Start({"--max-connections", "20", "--max-connections-per-address", "4"});
  std::vector<std::unique_ptr<RawClient>> refused;
  std::vector<std::unique_ptr<RawClient>> idle = IdleClients(agg, 6, &refused);
  CHECK(idle.size() == 4);
  CHECK(refused.size() == 2);
  RawClient other(agg.port(), "127.0.0.2");
  other.Greet();
  REQUIRE(other.Go("vol0").size == kVolumeSize);
  CheckRawRead(other, 1);
}

// The audit's C7 (and C3 for the control socket): 16 idle connections held
// every place of the metrics endpoint; scrapes were reset.
TEST_CASE_FIXTURE(SlotsFixture, "idle connections cannot lock scrapes and status out") {
  const int metrics_port = PickFreePort();
  AggregatorServer& agg = Start({"--metrics", "127.0.0.1:" + std::to_string(metrics_port)});
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int round = 0; round < 3; ++round) {
    // The attacker tops up its idle connections before every scrape.
    for (int i = 0; i < 16; ++i)
      idle.push_back(std::make_unique<RawClient>(metrics_port));
    const std::string answer =
        ReadToEnd(metrics_port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    INFO(answer);
    CHECK(answer.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(Contains(answer, "{volume=\"vol0\"}"));
  }
  idle.clear();
  for (int i = 0; i < 16; ++i)
    idle.push_back(std::make_unique<RawClient>(agg.control_path()));
  const CommandResult status =
      RunCommand({DST_AGGREGATOR_PATH, "status", "--control", agg.control_path()}, 20s);
  CHECK_MESSAGE(status.exit_code == 0, status.stderr_text);
  CHECK(Contains(status.stdout_text, "vol0"));
}

// The audit's X13: with the descriptors used up, the accept loop retried at
// once: 100% CPU, ~10 MB/s of log, and a member could not reconnect.
TEST_CASE_FIXTURE(SlotsFixture,
                  "out of descriptors: accepting pauses, then clients and a "
                  "member reconnect are served again") {
  // A 256 descriptor limit, of which the wrapper hands 190 open ones over:
  // --max-connections 100 looks affordable, but 80 clients use up the rest.
  const std::string hold_descriptors =
      "import os, sys\n"
      "for _ in range(190): os.set_inheritable(os.open('/dev/null', os.O_RDONLY), True)\n"
      "os.execv(sys.argv[1], sys.argv[1:])\n";
  AggregatorOptions o = Options({"--max-connections", "100", "--retry-window", "30s"});
  o.wrapper = {"prlimit", "--nofile=256:256", "--", DST_PYTHON3, "-c", hold_descriptors};
  AggregatorServer& agg = Start(std::move(o));
  NbdClient bystander;
  REQUIRE_NBD_OK(bystander.Connect(agg.uri()));
  CheckReadWrite(bystander, 0, 1);

  std::vector<std::unique_ptr<RawClient>> flood;
  for (int i = 0; i < 80; ++i)
    flood.push_back(std::make_unique<RawClient>(agg.port(), 5s));
  const char* const kFailure = "accept: Too many open files";
  REQUIRE(LogShows(agg, kFailure));
  const auto cpu_before = CpuTime(agg.pid());
  std::this_thread::sleep_for(3s);
  const auto cpu = CpuTime(agg.pid()) - cpu_before;
  INFO("CPU in 3 s: " << cpu.count() << " ms");
  CHECK(cpu < 1000ms);
  CHECK(CountOf(agg.stderr_text(), kFailure) <= 2);
  CheckReadWrite(bystander, 1 * kMiB, 2);  // a client already in is served meanwhile

  flood.clear();
  CHECK(LogShows(agg, "accepting again after"));
  NbdClient late;
  REQUIRE_NBD_OK(late.Connect(agg.uri()));
  CheckReadWrite(late, 2 * kMiB, 3);
  // The member goes away and comes back: the aggregator has descriptors to reconnect.
  member().KillAndWait();
  member().Restart();
  CheckReadWrite(bystander, 3 * kMiB, 4);
  CHECK(LogShows(agg, "reconnecting -> ready"));
  CHECK(CountOf(agg.stderr_text(), kFailure) <= 2);
}

// The audit's C5: a typo in a unit file deleted whatever the path named.
TEST_CASE_FIXTURE(SlotsFixture, "--control and --unix never delete a regular file") {
  const std::string control = dir().File("important.txt");
  const std::string listen = dir().File("important2.txt");
  std::ofstream(control) << "keep me\n";
  std::ofstream(listen) << "keep me too\n";
  const struct {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--control", control},
       "control socket " + control + ": " + control + " exists and is not a socket"},
      {{"--unix", listen}, "listen on " + listen + ": " + listen + " exists and is not a socket"},
  };
  for (const auto& c : cases) {
    const StartFailure f = AggregatorServer::StartExpectingFailure(Options(c.args));
    CHECK(f.exit_code == 1);
    CHECK_MESSAGE(Contains(f.stderr_text, c.message), f.stderr_text);
  }
  std::string line;
  std::getline(std::ifstream(control), line);
  CHECK(line == "keep me");
  std::getline(std::ifstream(listen), line);
  CHECK(line == "keep me too");
}

// The deadline of a handshake expiring in the same pass of the event loop as
// the client's end-of-file (server_test makes that pass happen for sure;
// here the real server meets it by the hundred). Each client's time counts
// from its greeting: the server arms the deadline before it greets, so a
// close at greeting + 190..210 ms falls at or after the server's 200 ms however
// late the greeting came through a loaded machine, and never before it by
// more than 10 ms. Rounds go on until the server has timed some out, at most 10.
TEST_CASE_FIXTURE(SlotsFixture, "clients leaving right at the handshake deadline") {
  AggregatorServer& agg = Start({"--handshake-timeout", "200ms"}, AggregatorListen::kUnix);
  NbdClient bystander;
  REQUIRE_NBD_OK(bystander.Connect(agg.uri()));
  const char* const kTimedOut = "no export chosen within 200 ms; disconnected";
  int rounds = 0;
  for (; rounds < 10 && (rounds < 5 || !Contains(agg.stderr_text(), kTimedOut)); ++rounds) {
    std::vector<std::unique_ptr<RawClient>> clients;
    std::vector<std::chrono::steady_clock::time_point> greeted;
    for (int i = 0; i < 40; ++i) {
      clients.push_back(std::make_unique<RawClient>(agg.socket_path()));
      uint8_t hello[18];
      REQUIRE(clients.back()->Recv(hello));
      greeted.push_back(std::chrono::steady_clock::now());
    }
    // One every half millisecond, from 10 ms before the deadline to 10 ms after.
    for (size_t i = 0; i < clients.size(); ++i) {
      std::this_thread::sleep_until(greeted[i] + 190ms + i * 500us);
      clients[i]->Close();
    }
  }
  INFO("rounds: " << rounds);
  CHECK(agg.WaitForLog(kTimedOut));
  CheckReadWrite(bystander, 0, 5);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_slots_test
