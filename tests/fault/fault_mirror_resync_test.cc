// fault_mirror_resync: a copy of a 2-copy mirror that comes back is brought back to current in
// the background (docs/redundancy.md, "Resync and rebuild"), with real export nodes, the real
// aggregator and a real client:
//   - after writes while it was away, a bitmap resync copies exactly the regions they touched,
//     and the copies' data areas end byte-equal;
//   - client writes during a resync reach both copies;
//   - with no write while it was away, nothing is copied;
//   - --no-auto-resync leaves it stale;
//   - a full rebuild of a large sparse volume copies only what was written;
//   - an aggregator killed in the middle of a resync or a rebuild resumes from the checkpointed
//     cursor;
//   - `resync-rate` raises the rate of a running rebuild within a second, without restarting it.
#include <algorithm>
#include <csignal>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fault_mirror_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_resync_test {
namespace {

constexpr uint64_t kBlock = 4 * kKiB;
constexpr uint64_t kRegion = 1 * kMiB;
const std::string kVolume = "mir";
const std::string kStatsMark = "info: stats: volume mir integrity: ";

uint64_t Counter(AggregatorServer& agg, const std::string& name) {
  return QueryStatsLine(agg, kStatsMark).Count(name);
}

// 100 blocks of 4 KiB at seeded random block offsets below `span`, written through a degraded
// aggregator (slot 1 missing); returns the regions they touched.
std::set<uint64_t> WriteWhileAway(Mirror& mirror, uint64_t span, int count = 100) {
  Aggregator agg({"--allow-degraded", mirror.member(0).uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  std::mt19937_64 rng(17);
  std::set<uint64_t> regions;
  for (int i = 0; i < count; ++i) {
    const uint64_t offset = rng() % (span / kBlock) * kBlock;
    REQUIRE_NBD_OK(WriteFor(client, RandomBytes(kBlock, 1000 + i), offset));
    regions.insert(offset / kRegion);
  }
  REQUIRE_NBD_OK(FlushFor(client));
  CHECK_NBD_OK(client.Shutdown());
  return regions;
}

TEST_SUITE_BEGIN("fault_mirror_resync");

TEST_CASE("re-add after writes: the missed regions are resynced, the copies end byte-equal") {
  Mirror mirror(64 * kMiB);
  mirror.StopMember1();
  const std::set<uint64_t> regions = WriteWhileAway(mirror, 32 * kMiB);
  mirror.RestartMember1();
  Aggregator agg(mirror.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(agg.WaitForLog("resyncing mir slot 1: done (", 1, 60s));
  CHECK(Contains(agg.stderr_text(), "slot 1 " + mirror.member(1).uri() +
                                        ": resyncing (partial: " + std::to_string(regions.size()) +
                                        " regions missed since event"));
  CHECK(Contains(agg.stderr_text(), "is current again (set 0 now [UU])"));
  const uint64_t resynced = Counter(agg, "resync_bytes");
  MESSAGE(regions.size() << " regions touched, " << resynced << " bytes resynced of "
                         << mirror.data_size());
  CHECK(resynced == regions.size() * kRegion);
  CHECK(Counter(agg, "resync_unrecoverable") == 0);
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"UU\"]"));
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_CASE("re-add with no write while away: nothing is copied") {
  Mirror mirror(16 * kMiB);
  mirror.StopMember1();
  WriteWhileAway(mirror, 8 * kMiB, 0);
  mirror.RestartMember1();
  Aggregator agg(mirror.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(agg.WaitForLog("resyncing mir slot 1: done (0 B)", 1, 60s));
  CHECK(Counter(agg, "resync_bytes") == 0);
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"UU\"]"));
}

TEST_CASE("client writes during a resync: no error, the copies end byte-equal") {
  Mirror mirror(32 * kMiB);
  mirror.StopMember1();
  const std::set<uint64_t> regions = WriteWhileAway(mirror, 24 * kMiB);
  // Slow writes to the returning copy, so that the client's writes meet the job's steps.
  mirror.RestartMember1({"delay"}, {"delay-write=100ms"});
  Aggregator agg(mirror.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  std::mt19937_64 rng(23);
  int written = 0;
  const auto start = SteadyClock::now();
  while (written < 200 && SecondsSince(start) < 30 &&
         !Contains(agg.stderr_text(), "resyncing mir slot 1: done (")) {
    const uint64_t offset = rng() % (mirror.data_size() / kBlock) * kBlock;
    REQUIRE_NBD_OK(WriteFor(client, RandomBytes(kBlock, 5000 + written), offset));
    ++written;
  }
  CHECK_NBD_OK(client.Shutdown());
  REQUIRE(agg.WaitForLog("resyncing mir slot 1: done (", 1, 60s));
  MESSAGE(written << " client writes during the resync of " << regions.size() << " regions");
  CHECK(written > 0);
  CHECK(Counter(agg, "resync_bytes") == regions.size() * kRegion);
  // Each write to the returning copy waits 100 ms, and the clean stop writes its table pages,
  // bitmap and superblock there: on a loaded machine that takes longer than the harness's
  // default 10 s, so the stop gets the aggregator's own bound for it (30 s).
  REQUIRE(agg.Stop(30s) == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_CASE("--no-auto-resync: the copy stays stale") {
  Mirror mirror(16 * kMiB);
  mirror.StopMember1();
  WriteWhileAway(mirror, 8 * kMiB, 10);
  mirror.RestartMember1();
  Aggregator agg({"--no-auto-resync", mirror.member(0).uri(), mirror.member(1).uri()});
  INFO("aggregator log:\n" << agg.stderr_text());
  CHECK(Contains(agg.stderr_text(),
                 "volume mir: slot 1 stays stale: not resynced (--no-auto-resync)"));
  const std::string json = StatusJson(agg);
  CHECK(Contains(json, "\"sets\": [\"U_\"]"));
  CHECK(agg.stderr_text().find("resyncing mir slot 1") == std::string::npos);
  CHECK(Counter(agg, "resync_bytes") == 0);
}

TEST_CASE("sparse rebuild: --discard 1 of a 256 MiB mirror copies what was written only") {
  Mirror mirror(256 * kMiB);
  constexpr uint64_t kWritten = 2 * kMiB;  // 32 pieces of 64 KiB, spread over the volume
  {
    Aggregator agg(mirror.uris());
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    for (uint64_t i = 0; i < 32; ++i)
      REQUIRE_NBD_OK(WriteFor(client, RandomBytes(64 * kKiB, 50 + i), i * 7 * kMiB + 12 * kKiB));
    CHECK_NBD_OK(client.Shutdown());
  }
  const auto start = SteadyClock::now();
  Aggregator agg({"--discard", "1", mirror.member(0).uri(), mirror.member(1).uri()});
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(agg.WaitForLog("rebuilding mir slot 1: done (", 1, 60s));
  const double seconds = SecondsSince(start);
  const uint64_t rebuilt = Counter(agg, "rebuild_bytes");
  MESSAGE("sparse rebuild of " << mirror.data_size() << " bytes with " << kWritten
                               << " written: " << rebuilt << " bytes copied in " << seconds
                               << " s (aggregator start to done)");
  CHECK(rebuilt == kWritten);
  CHECK(Contains(agg.stderr_text(), "rebuilding (full: discard"));
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

// The cursor of slot 1 in `inspect --json` of member 0, while it is `state`.
uint64_t CursorOf(const std::string& uri, const std::string& state) {
  const std::string json = RunAggregator({"inspect", "--json", uri}).stdout_text;
  std::smatch m;
  const std::regex re("\"state\": *\"" + state +
                      "\", *\"member_uuid\": *\"[^\"]*\", *\"stale_since\": *[0-9]+, *"
                      "\"cursor\": *([0-9]+)");
  return std::regex_search(json, m, re) ? std::stoull(m[1]) : 0;
}

// Waits (bounded) until the job has copied at least 40 % of `total` and the superblocks record a
// cursor for slot 1 in `state`, then SIGKILLs the aggregator; the bytes copied before the kill.
uint64_t KillWhenCheckpointed(AggregatorServer& agg, Mirror& mirror, const std::string& counter,
                              const std::string& state, uint64_t total) {
  uint64_t copied = 0;
  uint64_t cursor = 0;
  const auto start = SteadyClock::now();
  while (SecondsSince(start) < 60) {
    copied = Counter(agg, counter);
    cursor = CursorOf(mirror.member(0).uri(), state);
    if (copied * 10 >= total * 4 && cursor > 0) break;
    std::this_thread::sleep_for(100ms);
  }
  const std::string log = agg.stderr_text();  // not evaluated inside the assertion's report
  REQUIRE_MESSAGE(cursor > 0, log);
  agg.Kill(SIGKILL);
  REQUIRE(agg.Wait(10s).has_value());
  const std::string reports = agg.SanitizerReports();
  CHECK_MESSAGE(reports.empty(), reports);
  MESSAGE("killed at " << copied << " of " << total << " bytes, cursor " << cursor << " blocks");
  return copied;
}

TEST_CASE("SIGKILL in the middle of a resync: the restart resumes from the cursor") {
  Mirror mirror(64 * kMiB);
  mirror.StopMember1();
  const std::set<uint64_t> regions = WriteWhileAway(mirror, 32 * kMiB);
  const uint64_t total = regions.size() * kRegion;
  // Writes to the returning copy 1 s slow: a step (its data, then its table pages) takes 2 s at
  // least, so the job outlasts its first checkpoints (every 5 s) and the kill lands in the middle.
  mirror.RestartMember1({"delay"}, {"delay-write=1000ms"});
  uint64_t before_kill = 0;
  {
    AggregatorServer agg(FaultAggregatorOptions(mirror.uris(), AggregatorListen::kUnix));
    INFO("aggregator log:\n" << agg.stderr_text());
    before_kill = KillWhenCheckpointed(agg, mirror, "resync_bytes", "resyncing", total);
  }
  REQUIRE(before_kill < total);
  mirror.RestartMember1();
  Aggregator agg(mirror.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(agg.WaitForLog("resyncing mir slot 1: done (", 1, 60s));
  CHECK(Contains(agg.stderr_text(), ", resuming at data offset "));
  const uint64_t after = Counter(agg, "resync_bytes");
  MESSAGE(total << " bytes to resync; " << before_kill << " copied before the kill, " << after
                << " after the restart");
  CHECK(after < total);
  CHECK(after > 0);
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_CASE("SIGKILL in the middle of a rebuild: the restart resumes from the cursor") {
  Mirror mirror(64 * kMiB);
  constexpr uint64_t kPieces = 24;  // 1 MiB each, every 1.5 MiB
  {
    Aggregator agg(mirror.uris());
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    for (uint64_t i = 0; i < kPieces; ++i)
      REQUIRE_NBD_OK(WriteFor(client, RandomBytes(kMiB, 300 + i), i * 3 * kMiB / 2));
    CHECK_NBD_OK(client.Shutdown());
  }
  const uint64_t total = kPieces * kMiB;
  mirror.RestartMember1({"delay"}, {"delay-write=1000ms"});  // as for the resync above
  uint64_t before_kill = 0;
  {
    AggregatorServer agg(
        FaultAggregatorOptions({"--discard", "1", mirror.member(0).uri(), mirror.member(1).uri()},
                               AggregatorListen::kUnix));
    before_kill = KillWhenCheckpointed(agg, mirror, "rebuild_bytes", "rebuilding", total);
  }
  REQUIRE(before_kill < total);
  mirror.RestartMember1();
  // No --discard this time: the superblocks say the slot is rebuilding.
  Aggregator agg(mirror.uris());
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(agg.WaitForLog("rebuilding mir slot 1: done (", 1, 60s));
  CHECK(Contains(agg.stderr_text(), ", resuming at data offset "));
  const uint64_t after = Counter(agg, "rebuild_bytes");
  MESSAGE(total << " bytes to rebuild; " << before_kill << " copied before the kill, " << after
                << " after the restart");
  CHECK(after < total);
  CHECK(after > 0);
  REQUIRE(agg.Stop() == 0);
  const Bytes d0 = mirror.Data(0), d1 = mirror.Data(1);
  for (uint64_t i = 0; i < kPieces; ++i) {
    const uint64_t at = i * 3 * kMiB / 2;
    CHECK(std::equal(d0.begin() + at, d0.begin() + at + kMiB, d1.begin() + at));
  }
}

TEST_SUITE_END();

// Its own ctest entry (aggregator_fault_mirror_rate): the suite above nears its time bound on a
// loaded machine.
TEST_SUITE_BEGIN("fault_mirror_rate");

// Bytes done by the job `what` in status --json, or nullopt when no such job is listed.
std::optional<uint64_t> JobDone(const std::string& json, const std::string& what) {
  std::smatch m;
  const std::regex re(
      "\"what\": \"" + what +
      "\", \"state\": \"[^\"]*\", \"detail\": \"[^\"]*\", \"done_bytes\": ([0-9]+)");
  if (!std::regex_search(json, m, re)) return std::nullopt;
  return std::stoull(m[1]);
}

// One observation of the rebuild: when, and how far (total once it has left the job list).
struct Sample {
  double at = 0;  // seconds since the test's clock started
  uint64_t done = 0;
  bool finished = false;
};

// Samples the job until `until` seconds or until it finishes; every sample's done bytes must not
// go back (a restarted job would start again from 0).
std::vector<Sample> SampleJob(AggregatorServer& agg, SteadyClock::time_point clock, double until,
                              uint64_t total, uint64_t& last) {
  std::vector<Sample> samples;
  while (SecondsSince(clock) < until) {
    const std::optional<uint64_t> done = JobDone(StatusJson(agg), "rebuilding mir slot 1");
    const double at = SecondsSince(clock);
    // Not listed: finished, or not listed yet.
    const bool finished = !done && Contains(agg.stderr_text(), "rebuilding mir slot 1: done (");
    if (!done && !finished) {
      std::this_thread::sleep_for(50ms);
      continue;
    }
    samples.push_back({at, finished ? total : *done, finished});
    REQUIRE_MESSAGE(samples.back().done >= last,
                    "done bytes went back from " << last << " to " << samples.back().done);
    last = samples.back().done;
    if (finished) break;
    std::this_thread::sleep_for(50ms);
  }
  return samples;
}

// 2 MiB/s lets the first window see a few steps only; after `resync-rate --max 200M` the next
// second must show clearly more than the slow rate, whatever the machine's speed (a sanitizer
// build on a loaded machine still copies several times 2 MiB/s). Only ratios are asserted.
TEST_CASE("a rate change takes effect within a second without restarting the job") {
  Mirror mirror(64 * kMiB);
  constexpr uint64_t kPieces = 40;  // 1 MiB each, back to back
  {
    Aggregator agg(mirror.uris());
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
    for (uint64_t i = 0; i < kPieces; ++i)
      REQUIRE_NBD_OK(WriteFor(client, RandomBytes(kMiB, 700 + i), i * kMiB));
    CHECK_NBD_OK(client.Shutdown());
  }
  const uint64_t total = kPieces * kMiB;
  Aggregator agg({"--resync-rate-min", "1M", "--resync-rate-max", "2M", "--discard", "1",
                  mirror.member(0).uri(), mirror.member(1).uri()});
  INFO("aggregator log:\n" << agg.stderr_text());
  REQUIRE(agg.WaitForLog("rebuilding (full: discard", 1, 60s));
  const auto clock = SteadyClock::now();
  uint64_t last = 0;
  // The job is under way once it has copied something.
  Sample from;
  while (from.done == 0 && SecondsSince(clock) < 30) {
    const std::vector<Sample> one = SampleJob(agg, clock, SecondsSince(clock) + 0.01, total, last);
    if (!one.empty()) from = one.back();
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(from.done > 0);
  REQUIRE(!from.finished);
  const std::vector<Sample> slow = SampleJob(agg, clock, from.at + 3, total, last);
  REQUIRE(!slow.empty());
  REQUIRE(!slow.back().finished);
  const double slow_rate = double(slow.back().done - from.done) / (slow.back().at - from.at);

  const CommandResult answer = RunAggregator(
      {"resync-rate", "--control", agg.control_path(), "mir", "--min", "1M", "--max", "200M"});
  REQUIRE(answer.exit_code == 0);
  CHECK(Contains(answer.stdout_text, "ok: mir background rate 1 MiB/s to 200 MiB/s"));
  // From the last sample before the command to 1 s after its answer: the command's own time
  // counts against the new rate.
  const Sample changed = slow.back();
  const std::vector<Sample> fast = SampleJob(agg, clock, SecondsSince(clock) + 1, total, last);
  REQUIRE(!fast.empty());
  const Sample& end = fast.back();
  // Up to the first sample that saw the job finished: a lower bound of the new rate.
  const double fast_rate = double(end.done - changed.done) / (end.at - changed.at);
  MESSAGE("rebuild of " << total << " bytes: " << slow_rate / kMiB << " MiB/s at --max 2M over "
                        << slow.back().at - from.at << " s; " << fast_rate / kMiB
                        << " MiB/s in the " << end.at - changed.at << " s around resync-rate"
                        << std::string(end.finished ? " (finished)" : ""));
  CHECK(slow_rate < 4.0 * kMiB);  // the slow limit held (2 MiB/s, bursts of a few steps)
  CHECK(fast_rate > 3 * slow_rate);
  REQUIRE(agg.WaitForLog("rebuilding mir slot 1: done (", 1, 60s));
  // One job from start to end: it started once and copied every written byte once.
  const std::string log = agg.stderr_text();
  size_t starts = 0;
  for (size_t at = log.find("rebuilding (full: discard"); at != std::string::npos;
       at = log.find("rebuilding (full: discard", at + 1))
    ++starts;
  CHECK(starts == 1);
  CHECK(Counter(agg, "rebuild_bytes") == total);
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_resync_test
