// Event loops end to end (serve --threads, aggregator/server/event_loops.h): client connections
// spread over the loops while the volumes stay on the first. What a user checks: fio with many
// jobs verifies every byte it wrote, the volume's counters in `status --json` equal fio's own
// totals (no count lost or torn between loops), the log names the loop of each client, status
// counts the clients on each loop, one loop serves as before, and a count of loops the server
// cannot run is refused. A raw volume has a copy on each loop with the loop's own member
// connections, counted in the members' status, unless a member does not allow it.
#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/raw_volume_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_threads_test {
namespace {

using namespace std::chrono_literals;

// The loops named in the log's "connected to volume ... on loop N" lines.
std::set<int> LoopsInLog(const std::string& log) {
  std::set<int> loops;
  const std::string needle = ") on loop ";
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1))
    loops.insert(std::stoi(log.substr(at + needle.size())));
  return loops;
}

// `status --json` once `ready` holds for it (polled, 10 s at most), or the last one read: a
// client's arrival and departure reach the home loop a moment after the client sees them.
std::string AwaitStatus(const AggregatorServer& a,
                        const std::function<bool(const std::string&)>& ready) {
  std::string json;
  for (int i = 0; i < 100; ++i) {
    json = StatusJson(a);
    if (ready(json)) break;
    std::this_thread::sleep_for(100ms);
  }
  return json;
}

// `count` clients of `uri`, connected one after the other (so onto the loops in turn), each
// writing its own MiB and reading it back.
std::vector<NbdClient> ClientsWritingTheirMiB(const std::string& uri, size_t count) {
  std::vector<NbdClient> clients(count);
  for (size_t i = 0; i < clients.size(); ++i) {
    REQUIRE_NBD_OK(clients[i].Connect(uri));
    CheckReadWrite(clients[i], i * kMiB, i + 1);
  }
  return clients;
}

void ShutDown(std::vector<NbdClient>& clients) {
  for (NbdClient& c : clients)
    REQUIRE_NBD_OK(c.Shutdown());
}

// Requires loops 1 to 3 to log their own copy of volume vol0 over `members` member(s).
void RequireLoopCopies(AggregatorServer& a, size_t members) {
  for (int loop = 1; loop < 4; ++loop)
    REQUIRE(LogShows(a, "volume vol0: loop " + std::to_string(loop) +
                            " has its own connections to its " + std::to_string(members) +
                            " member(s)\n"));
}

TEST_SUITE_BEGIN("aggregator_threads");

TEST_CASE("fio, 8 jobs at iodepth 32 over 4 loops on a checksummed stripe: verified, counted") {
  FileMembers m(2, 32 * kMiB);
  const std::string name = "loops";
  CreateOk({"--name", name, "--layout", "stripe", "--chunk", "64K"}, m.uris());
  Served v(Concat({"--threads", "4"}, m.uris()), name);
  REQUIRE(LogShows(v, "on 4 event loop(s)"));
  // Each job writes its own 2 MiB with 4 KiB to 64 KiB blocks, then reads them back and checks.
  const Argv fio = {kFio,
                    "--name=loops",
                    "--ioengine=nbd",
                    "--uri=" + v.uri(name),
                    "--numjobs=8",
                    "--iodepth=32",
                    "--rw=randwrite",
                    "--bsrange=4k-64k",
                    "--size=2M",
                    "--offset_increment=2M",
                    "--verify=crc32c",
                    "--do_verify=1",
                    "--verify_fatal=1",
                    "--verify_state_save=0",
                    "--group_reporting",
                    "--output-format=json"};
  const CommandResult r = RunCommand(fio, 120s);
  INFO(JoinArgv(fio));
  INFO("fio stderr:\n" << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK_FALSE(Contains(r.stderr_text, "verify"));
  const FioReport report = ParseFioJson(r.stdout_text);
  CHECK(report.error == 0);
  CHECK(report.write.io_kib == 8 * 2 * 1024);
  CHECK(report.read.io_kib == 8 * 2 * 1024);

  // Every fio connection has said goodbye once the volume has no client left.
  const std::string json =
      AwaitStatus(v, [](const std::string& j) { return JsonNumber(j, "clients") == 0; });
  INFO("status:\n" << json);
  CHECK(JsonNumber(json, "clients") == 0);
  // fio's nbd engine connects each job once to size the export, then once to work.
  CHECK(JsonNumber(json, "connections") >= 8);
  CHECK(JsonNumber(json, "requests_in_flight") == 0);
  CHECK(JsonNumber(json, "request_errors") == 0);
  CHECK(JsonNumber(json, "writes") == static_cast<int64_t>(report.write.ios));
  CHECK(JsonNumber(json, "reads") == static_cast<int64_t>(report.read.ios));
  CHECK(JsonNumber(json, "written_bytes") == static_cast<int64_t>(report.write.io_kib * 1024));
  CHECK(JsonNumber(json, "read_bytes") == static_cast<int64_t>(report.read.io_kib * 1024));
  // Clients in turn from loop 1, the home loop last: every loop had some.
  CHECK(LoopsInLog(v.stderr_text()) == std::set<int>{0, 1, 2, 3});
  v.Stop();
}

// Checks that `status --json` comes to count `want` clients on the loops ("[2, 2, 2, 2]").
std::string AwaitLoopClients(const AggregatorServer& a, const std::string& want) {
  const std::string needle = "\"loop_clients\": " + want + ",";
  const std::string json =
      AwaitStatus(a, [&needle](const std::string& j) { return Contains(j, needle); });
  INFO("status --json:\n" << json);
  CHECK(Contains(json, needle));
  return json;
}

TEST_CASE("8 clients over 4 loops: status counts two on each, and none once they have left") {
  FileMembers m(1, 16 * kMiB);
  const std::string name = "spread";
  CreateOk({"--name", name}, m.uris());
  Served v(Concat({"--threads", "4"}, m.uris()), name);
  std::vector<NbdClient> clients = ClientsWritingTheirMiB(v.uri(name), 8);
  // Accepted onto the loops in turn: eight consecutive clients, two on each.
  AwaitLoopClients(v, "[2, 2, 2, 2]");
  const CommandResult table = RunAggregator({"status", "--control", v.control_path()});
  CHECK(table.stdout_text.rfind("uptime ", 0) == 0);
  CHECK(Contains(table.stdout_text, " s, clients by event loop: 2 2 2 2\n"));
  ShutDown(clients);
  AwaitLoopClients(v, "[0, 0, 0, 0]");
  v.Stop();
}

TEST_CASE("one loop: every client is served on the home loop, as before") {
  FileMembers m(1, 16 * kMiB);
  const std::string name = "one";
  CreateOk({"--name", name}, m.uris());
  Served v(Concat({"--threads", "1"}, m.uris()), name);
  REQUIRE(LogShows(v, "on 1 event loop(s)"));
  std::vector<NbdClient> clients = ClientsWritingTheirMiB(v.uri(name), 3);
  ShutDown(clients);
  CHECK(LoopsInLog(v.stderr_text()) == std::set<int>{0});
  v.Stop();
}

// The member `index` of `volume` in `status --json`, from its opening brace on.
std::string MemberJson(const std::string& json, const std::string& volume, int index) {
  const std::string key =
      "{\"volume\": \"" + volume + "\", \"index\": " + std::to_string(index) + ",";
  const size_t at = json.find(key);
  return at == std::string::npos ? "" : json.substr(at);
}

// A 4 KiB block that says which client wrote it where.
std::vector<uint8_t> Block(size_t client, uint64_t offset) {
  std::vector<uint8_t> block(4 * kKiB);
  for (size_t i = 0; i < block.size(); ++i)
    block[i] = static_cast<uint8_t>(client * 131 + offset / (4 * kKiB) * 7 + i);
  return block;
}

TEST_CASE("a raw stripe over 4 loops: each loop has its own member connections, status sums them") {
  FileMembers m(2, 16 * kMiB);
  Served v(Concat(
      {"--raw", "--layout", "stripe", "--chunk", "64K", "--threads", "4", "--connections", "2"},
      m.uris()));
  RequireLoopCopies(v, 2);
  // Eight clients, two on each loop: each writes 16 blocks of its own MiB, and the next client,
  // on another loop, reads them back through its loop's own connections.
  constexpr size_t kClients = 8;
  constexpr int kBlocks = 16;
  std::vector<NbdClient> clients(kClients);
  for (NbdClient& c : clients)
    REQUIRE_NBD_OK(c.Connect(v.uri()));
  for (size_t i = 0; i < kClients; ++i)
    for (int b = 0; b < kBlocks; ++b) {
      const uint64_t offset = i * kMiB + static_cast<uint64_t>(b) * 64 * kKiB;
      REQUIRE_NBD_OK(clients[i].Pwrite(Block(i, offset), offset));
    }
  for (size_t i = 0; i < kClients; ++i)
    for (int b = 0; b < kBlocks; ++b) {
      const uint64_t offset = i * kMiB + static_cast<uint64_t>(b) * 64 * kKiB;
      INFO("client " << i << ", offset " << offset);
      CHECK(clients[(i + 1) % kClients].ReadOrThrow(4 * kKiB, offset) == Block(i, offset));
    }
  // Clients from loop 1 on: the first six are on loops 1 to 3, which use their own copies.
  CHECK(Contains(v.stderr_text(), ") on loop 3, with the loop's own member connections\n"));

  // Every request was one member I/O (4 KiB inside a 64 KiB chunk), made on whichever loop: the
  // members' counts, summed over the loops, are the volume's.
  const std::string json = StatusJson(v);
  INFO("status:\n" << json);
  const int64_t requests = 2 * kClients * kBlocks;
  CHECK(JsonNumber(json, "reads") + JsonNumber(json, "writes") == requests);
  const std::string m0 = MemberJson(json, "vol0", 0);
  const std::string m1 = MemberJson(json, "vol0", 1);
  REQUIRE(!m0.empty());
  REQUIRE(!m1.empty());
  CHECK(JsonNumber(m0, "ios") + JsonNumber(m1, "ios") == requests);
  CHECK(JsonNumber(m0, "bytes") + JsonNumber(m1, "bytes") == requests * 4 * kKiB);
  // Two connections per member on each of the four loops.
  CHECK(JsonNumber(m0, "connections") == 8);
  CHECK(JsonNumber(m1, "connections") == 8);
  CHECK(Contains(m0, "\"state\": \"ready\""));
  ShutDown(clients);
  v.Stop();
}

TEST_CASE("512-byte blocks over 4 loops: each writes on its own until the first merge, then home") {
  FileMembers m(2, 16 * kMiB);
  Served v(Concat({"--raw", "--layout", "stripe", "--chunk", "64K", "--threads", "4"}, m.uris()));
  RequireLoopCopies(v, 2);
  std::vector<NbdClient> clients(4);  // on loops 1, 2, 3, then home
  for (NbdClient& c : clients)
    REQUIRE_NBD_OK(c.Connect(v.uri()));
  // Aligned writes, each loop on its own.
  for (size_t i = 0; i < clients.size(); ++i)
    REQUIRE_NBD_OK(clients[i].Pwrite(Block(i, i * kMiB), i * kMiB));
  CHECK_FALSE(Contains(v.stderr_text(), "an unaligned write is merged"));
  // A 100-byte write inside the block loop 2's client wrote, from loop 1: merged on home.
  const std::vector<uint8_t> patch(100, 0xA5);
  REQUIRE_NBD_OK(clients[0].SetStrictMode(0));  // libnbd would refuse it itself
  REQUIRE_NBD_OK(clients[0].Pwrite(patch, 1 * kMiB + 7));
  CHECK(LogShows(v,
                 "volume vol0: an unaligned write is merged: every loop writes through the "
                 "home loop from now on\n"));
  // From now on every loop's writes go home; all of it reads back from every loop.
  for (size_t i = 0; i < clients.size(); ++i)
    REQUIRE_NBD_OK(clients[i].Pwrite(Block(i + 10, i * kMiB + 64 * kKiB), i * kMiB + 64 * kKiB));
  std::vector<uint8_t> merged = Block(1, 1 * kMiB);
  std::copy(patch.begin(), patch.end(), merged.begin() + 7);
  for (size_t reader = 0; reader < clients.size(); ++reader) {
    INFO("read through client " << reader);
    CHECK(clients[reader].ReadOrThrow(4 * kKiB, 1 * kMiB) == merged);
    for (size_t i = 0; i < clients.size(); ++i) {
      if (i != 1) CHECK(clients[reader].ReadOrThrow(4 * kKiB, i * kMiB) == Block(i, i * kMiB));
      CHECK(clients[reader].ReadOrThrow(4 * kKiB, i * kMiB + 64 * kKiB) ==
            Block(i + 10, i * kMiB + 64 * kKiB));
    }
  }
  CHECK(CountOf(v.stderr_text(), "an unaligned write is merged") == 1);
  ShutDown(clients);
  v.Stop();
}

TEST_CASE("a member restarted under 4 loops: each loop's copy reconnects on its own") {
  const TempDir dir("dst-loops");
  // A minimum block of one byte: the loops read and write through their own connections.
  PluginServer member({"file=" + dir.File("member.img"), "size=16M", "blocksize-minimum=1"},
                      Transport::kUnix, {"--filter=blocksize-policy"});
  Served v({"--raw", "--threads", "4", "--connections", "1", member.uri()});
  RequireLoopCopies(v, 1);
  // One client on each loop (1, 2, 3, then home).
  std::vector<NbdClient> clients = ClientsWritingTheirMiB(v.uri(), 4);
  CHECK(Contains(v.stderr_text(), ") on loop 1, with the loop's own member connections\n"));
  member.KillAndWait();
  member.Restart();
  // Every loop's member finds its connection gone and reconnects; the clients' requests wait
  // for that and go through, on every loop.
  for (size_t i = 0; i < clients.size(); ++i)
    CheckReadWrite(clients[i], i * kMiB + 64 * kKiB, i + 11);
  const std::string json = StatusJson(v);
  INFO("status:\n" << json);
  const std::string m0 = MemberJson(json, "vol0", 0);
  CHECK(JsonNumber(m0, "reconnects") >= 4);
  CHECK(JsonNumber(m0, "connections") == 4);
  // Each loop's log lines name its copy of the member apart.
  for (int loop = 1; loop < 4; ++loop)
    CHECK(LogShows(v, "member " + member.uri() + " (loop " + std::to_string(loop) +
                          "): ready -> reconnecting: "));
  CHECK(LogShows(v, "member " + member.uri() + ": ready -> reconnecting: "));
  CHECK(JsonNumber(m0, "failures") == 0);
  CHECK(Contains(m0, "\"state\": \"ready\""));
  ShutDown(clients);
  v.Stop();
}

TEST_CASE("a member without multi-conn: the volume is served from the home loop only") {
  const TempDir dir("dst-loops");
  PluginServer member({"file=" + dir.File("member.img"), "size=16M", "multi-conn-mode=disable"},
                      Transport::kUnix, {"--filter=multi-conn"});
  Served v({"--raw", "--threads", "4", member.uri()});
  REQUIRE(LogShows(v, "volume vol0: served from the home loop only: member " + member.uri() +
                          " does not allow multi-conn"));
  std::vector<NbdClient> clients = ClientsWritingTheirMiB(v.uri(), 4);
  CHECK(LoopsInLog(v.stderr_text()) == std::set<int>{0, 1, 2, 3});
  CHECK_FALSE(Contains(v.stderr_text(), "own member connections"));
  CHECK_FALSE(Contains(v.stderr_text(), "has its own connections"));
  ShutDown(clients);
  v.Stop();
}

TEST_CASE("serve refuses a count of event loops it cannot run") {
  FileMembers m(1, 16 * kMiB);
  CheckServeRefused({"--raw", "--threads", "0", m.uri(0)}, {"--threads", "expected 1 to 1024"});
  CheckServeRefused({"--raw", "--threads", "many", m.uri(0)}, {"--threads", "many"});
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_threads_test
