// Event loops end to end (serve --threads, aggregator/server/event_loops.h): client connections
// spread over the loops while the volumes stay on the first. What a user checks: fio with many
// jobs verifies every byte it wrote, the volume's counters in `status --json` equal fio's own
// totals (no count lost or torn between loops), the log names the loop of each client, status
// counts the clients on each loop, one loop serves as before, and a count of loops the server
// cannot run is refused.
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
  std::vector<NbdClient> clients(8);
  for (size_t i = 0; i < clients.size(); ++i) {
    REQUIRE_NBD_OK(clients[i].Connect(v.uri(name)));
    CheckReadWrite(clients[i], i * kMiB, i + 1);
  }
  // Accepted onto the loops in turn: eight consecutive clients, two on each.
  AwaitLoopClients(v, "[2, 2, 2, 2]");
  const CommandResult table = RunAggregator({"status", "--control", v.control_path()});
  CHECK(table.stdout_text.rfind("uptime ", 0) == 0);
  CHECK(Contains(table.stdout_text, " s, clients by event loop: 2 2 2 2\n"));
  for (NbdClient& c : clients)
    REQUIRE_NBD_OK(c.Shutdown());
  AwaitLoopClients(v, "[0, 0, 0, 0]");
  v.Stop();
}

TEST_CASE("one loop: every client is served on the home loop, as before") {
  FileMembers m(1, 16 * kMiB);
  const std::string name = "one";
  CreateOk({"--name", name}, m.uris());
  Served v(Concat({"--threads", "1"}, m.uris()), name);
  REQUIRE(LogShows(v, "on 1 event loop(s)"));
  std::vector<NbdClient> clients(3);
  for (size_t i = 0; i < clients.size(); ++i) {
    REQUIRE_NBD_OK(clients[i].Connect(v.uri(name)));
    CheckReadWrite(clients[i], i * kMiB, i + 1);
  }
  for (NbdClient& c : clients)
    REQUIRE_NBD_OK(c.Shutdown());
  CHECK(LoopsInLog(v.stderr_text()) == std::set<int>{0});
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
