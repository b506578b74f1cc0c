// fault_mirror_return: a copy of a 2-copy mirror that is out while `serve` runs, and whose export
// node answers again, is brought back by the running aggregator (docs/redundancy.md, "A member
// comes back"), with real export nodes, the real aggregator and a real client:
//   - a copy demoted while serving (its node killed under writes) is resynced once its node is
//     back on the same socket: exactly the regions written meanwhile, and the copies' data areas
//     end byte-equal;
//   - a copy whose node was paused (SIGSTOP) past --degrade-after comes back once it resumes,
//     under a fence epoch above the one the node holds from the old member's reconnect;
//   - a copy missing at start (--allow-degraded) is caught up once its node starts;
//   - --no-auto-resync leaves a copy that comes back stale;
//   - the export of a removed slot (`member remove`) is refused, logged once, and stays out.
#include <chrono>
#include <csignal>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fault_mirror_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_return_test {
namespace {

constexpr uint64_t kBlock = 4 * kKiB;
constexpr uint64_t kRegion = 1 * kMiB;
const std::string kVolume = "mir";
const std::string kStatsMark = "info: stats: volume mir integrity: ";
// Short enough that a case sees several probes in a second or two.
const std::string kProbeInterval = "300ms";
constexpr Ms kProbe = 300ms;

uint64_t Counter(AggregatorServer& agg, const std::string& name) {
  return QueryStatsLine(agg, kStatsMark).Count(name);
}

// serve of both members with a short --degrade-after and probe interval, and `extra` options.
std::vector<std::string> ServeArgs(Mirror& mirror, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      "--degrade-after", "1s", "--io-timeout", "500ms", "--return-probe-interval", kProbeInterval};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(mirror.member(0).uri());
  args.push_back(mirror.member(1).uri());
  return args;
}

// `count` blocks of 4 KiB at seeded random block offsets below `span` through `client`, every one
// acknowledged, then a flush; the regions they touched.
std::set<uint64_t> WriteBlocks(NbdClient& client, uint64_t span, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::set<uint64_t> regions;
  for (int i = 0; i < count; ++i) {
    const uint64_t offset = rng() % (span / kBlock) * kBlock;
    REQUIRE_NBD_OK(WriteFor(client, RandomBytes(kBlock, seed * 1000 + i), offset));
    regions.insert(offset / kRegion);
  }
  REQUIRE_NBD_OK(FlushFor(client));
  return regions;
}

// Kills member 1's node, writes through the aggregator until the copy is demoted (the first write
// waits for it), and returns the regions written.
std::set<uint64_t> LoseMember1UnderWrites(Mirror& mirror, AggregatorServer& agg, uint64_t span,
                                          int count) {
  mirror.member(1).KillHard();
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  const std::set<uint64_t> regions = WriteBlocks(client, span, count, 41);
  CHECK_NBD_OK(client.Shutdown());
  REQUIRE(agg.WaitForLog("demoted to stale (set", 1, 10s));
  return regions;
}

TEST_SUITE_BEGIN("fault_mirror_return");

TEST_CASE("demoted while serving, back on its socket: resynced by the running aggregator") {
  Mirror mirror(64 * kMiB);
  Aggregator agg(ServeArgs(mirror));
  INFO("aggregator log:\n" << agg.stderr_text());
  const std::string uri1 = mirror.member(1).uri();
  const std::set<uint64_t> regions = LoseMember1UnderWrites(mirror, agg, 32 * kMiB, 100);
  CHECK(Contains(StatusJson(agg), SlotState(1, uri1, "stale")));
  const auto back = SteadyClock::now();
  mirror.member(1).RestartAfterKill();
  REQUIRE(agg.WaitForLog("resyncing mir slot 1: done (", 1, 30s));
  MESSAGE(regions.size() << " regions written while away; resynced " << SecondsSince(back)
                         << " s after the node came back");
  CHECK(Contains(agg.stderr_text(), "volume mir: slot 1 " + uri1 + " is back: "));
  CHECK(Counter(agg, "resync_bytes") == regions.size() * kRegion);
  CHECK(Counter(agg, "resync_unrecoverable") == 0);
  CHECK(WaitForStatus(agg, "\"sets\": [\"UU\"]", 5s).has_value());
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

// The node is never restarted, so it keeps the slot's fence session at the epoch of the old
// member's last reconnect, and would refuse (ESTALE) a new member at the slot's first epoch.
TEST_CASE("paused past --degrade-after after a reconnect: back above the old member's epoch") {
  Mirror mirror(16 * kMiB);
  Aggregator agg({"--degrade-after", "3s", "--io-timeout", "500ms", "--return-probe-interval",
                  kProbeInterval, mirror.member(0).uri(), mirror.member(1).uri()});
  INFO("aggregator log:\n" << agg.stderr_text());
  const std::string uri1 = mirror.member(1).uri();
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  // Paused for less than --degrade-after: the write times out, the member reconnects under the
  // next epoch once the node resumes, and the copy stays current.
  const uint64_t first = QueryStats(agg, kVolume, 1).Count("epoch");
  mirror.member(1).Kill(SIGSTOP);
  std::jthread resume([&] {
    std::this_thread::sleep_for(1500ms);
    mirror.member(1).Kill(SIGCONT);
  });
  const NbdStatus written = WriteFor(client, RandomBytes(kBlock, 4700), 0);
  resume.join();
  REQUIRE_NBD_OK(written);
  const uint64_t reconnected = WaitForStats(
                                   agg, kVolume, 1,
                                   [&](const MemberStats& s) {
                                     return s.Text("state") == "ready" && s.Count("epoch") > first;
                                   },
                                   10s)
                                   .Count("epoch");
  REQUIRE(Contains(StatusJson(agg), "\"sets\": [\"UU\"]"));
  // Paused past it: demoted, its member abandoned; then resumed, with its session where the
  // reconnect left it.
  mirror.member(1).Kill(SIGSTOP);
  WriteBlocks(client, 8 * kMiB, 20, 47);
  REQUIRE(agg.WaitForLog("demoted to stale (set", 1, 10s));
  mirror.member(1).Kill(SIGCONT);
  REQUIRE(agg.WaitForLog("resyncing mir slot 1: done (", 1, 30s));
  CHECK(Contains(agg.stderr_text(), "volume mir: slot 1 " + uri1 + " is back: "));
  CHECK_FALSE(Contains(agg.stderr_text(), "cannot come back"));
  const uint64_t back = QueryStats(agg, kVolume, 1).Count("epoch");
  MESSAGE("slot 1 fence epochs: " << first << " at start, " << reconnected
                                  << " after the reconnect, " << back << " back");
  CHECK(back > reconnected);
  CHECK(WaitForStatus(agg, "\"sets\": [\"UU\"]", 5s).has_value());
  CHECK_NBD_OK(client.Shutdown());
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_CASE("missing at start (--allow-degraded): caught up once its node starts") {
  Mirror mirror(32 * kMiB);
  const std::string uri1 = mirror.member(1).uri();
  REQUIRE(mirror.member(1).Stop() == 0);
  Aggregator agg(ServeArgs(mirror, {"--allow-degraded"}));
  INFO("aggregator log:\n" << agg.stderr_text());
  CHECK(Contains(agg.stderr_text(), "member " + uri1 + " cannot be read, counted missing"));
  {
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    WriteBlocks(client, 16 * kMiB, 50, 43);
    CHECK_NBD_OK(client.Shutdown());
  }
  std::this_thread::sleep_for(2 * kProbe);  // probes that find nothing
  mirror.member(1).Restart();
  // Resynced or rebuilt, as the volume's rules decide for the copy's superblock.
  REQUIRE(agg.WaitForLog("mir slot 1: done (", 1, 30s));
  CHECK(Contains(agg.stderr_text(), "volume mir: slot 1 " + uri1 + " is back: "));
  CHECK(WaitForStatus(agg, "\"sets\": [\"UU\"]", 5s).has_value());
  // The slot has a member line now, as if it had been there from the start.
  CHECK(QueryStats(agg, kVolume, 1).Text("state") == "ready");
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_CASE("--no-auto-resync: a copy that comes back stays stale") {
  Mirror mirror(16 * kMiB);
  Aggregator agg(ServeArgs(mirror, {"--no-auto-resync"}));
  INFO("aggregator log:\n" << agg.stderr_text());
  const std::string uri1 = mirror.member(1).uri();
  LoseMember1UnderWrites(mirror, agg, 8 * kMiB, 10);
  mirror.member(1).RestartAfterKill();
  std::this_thread::sleep_for(5 * kProbe);
  const std::string json = StatusJson(agg);
  CHECK(Contains(json, SlotState(1, uri1, "stale")));
  CHECK(Contains(json, "\"sets\": [\"U_\"]"));
  CHECK_FALSE(Contains(agg.stderr_text(), "mir slot 1: done ("));
  CHECK_FALSE(Contains(agg.stderr_text(), " is back: "));
  CHECK(Counter(agg, "resync_bytes") == 0);
}

TEST_CASE("a removed slot's export comes back: refused once, the slot stays out") {
  Mirror mirror(16 * kMiB);
  Aggregator agg(ServeArgs(mirror));
  INFO("aggregator log:\n" << agg.stderr_text());
  const std::string uri1 = mirror.member(1).uri();
  LoseMember1UnderWrites(mirror, agg, 8 * kMiB, 10);
  const CommandResult removed =
      RunAggregator({"member", "--control", agg.control_path(), "remove", "mir", "1"});
  INFO("member remove: " << removed.stdout_text << removed.stderr_text);
  REQUIRE(removed.exit_code == 0);
  CHECK(removed.stdout_text == "ok: mir slot 1 removed (missing)\n");
  mirror.member(1).RestartAfterKill();
  const std::string refusal = "volume mir: " + uri1 + " cannot come back to slot 1: not-owner: ";
  REQUIRE(agg.WaitForLog(refusal, 1, 10s));
  std::this_thread::sleep_for(5 * kProbe);  // probed again, not logged again
  const std::string log = agg.stderr_text();
  MESSAGE(LineWithAll(log, {refusal}));
  CHECK(CountOf(log, refusal) == 1);
  CHECK_FALSE(Contains(log, " is back: "));
  CHECK_FALSE(Contains(log, "mir slot 1: done ("));
  const std::string json = StatusJson(agg);
  CHECK(Contains(json, "\"sets\": [\"U_\"]"));
  CHECK(Contains(json, "\"state\": \"missing\""));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_return_test
