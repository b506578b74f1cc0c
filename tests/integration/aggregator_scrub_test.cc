// Scrub and background rates end to end: `dst-aggregator create --layout mirror` over plugin
// members on files, the real `serve`, and the real `scrub`, `resync-rate`, `status` and
// `inspect` commands. What a user checks: a block corrupted (garbage written into a member's
// backing file) on the copy no client read is found and repaired, its bytes equal to the good
// copy's afterwards; a block bad on both copies is counted unrecoverable and logged with its
// volume offset; check mode repairs nothing; the commands' exact answers; a paused scrub stays
// paused across a restart; a rate change shows in status at once.
#include <chrono>
#include <regex>
#include <thread>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/nbd_client.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_scrub_test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBadBlock = 5;

// `dst-aggregator COMMAND --control P ARGS...` against the running aggregator.
CommandResult Ask(const AggregatorServer& a, const std::string& command,
                  std::vector<std::string> args) {
  args.insert(args.begin(), {command, "--control", a.control_path()});
  return RunAggregator(args);
}

void CheckOk(const CommandResult& r, const std::string& answer) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_text == answer + "\n");
}

void CheckError(const CommandResult& r, const std::string& error) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(r.stdout_text.empty());
  CHECK(Contains(LineWithAll(r.stderr_text, {"error: "}), error));
}

// Status JSON once it holds every one of `parts` (polled, 60 s at most).
std::string AwaitStatus(const AggregatorServer& a, const std::vector<std::string>& parts) {
  std::string json;
  for (int i = 0; i < 600; ++i) {
    json = StatusJson(a);
    bool all = true;
    for (const std::string& p : parts)
      all = all && Contains(json, p);
    if (all) return json;
    std::this_thread::sleep_for(100ms);
  }
  FAIL("status never showed all of the expected parts:\n" << json);
  return json;
}

uint64_t DataOffset(const std::string& uri) {
  const CommandResult r = RunAggregator({"inspect", "--json", uri});
  REQUIRE(r.exit_code == 0);
  std::smatch m;
  const std::regex data("\"data\": *\\{\"offset\": *([0-9]+)");
  REQUIRE_MESSAGE(std::regex_search(r.stdout_text, m, data), r.stdout_text);
  return std::stoull(m[1]);
}

// A mirror of two holding `kWritten` bytes of data written through the aggregator, stopped.
class Mirror {
 public:
  static constexpr uint64_t kWritten = 256 * kKiB;

  explicit Mirror(uint64_t member_size = 8 * kMiB)
      : m_(2, member_size), data_(RandomBytes(kWritten, 7)) {
    CreateOk({"--name", "mir", "--layout", "mirror"}, m_.uris());
    Served agg(m_.uris());
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    REQUIRE_NBD_OK(c.Pwrite(data_, 0));
    REQUIRE_NBD_OK(c.Flush());
    CHECK_NBD_OK(c.Shutdown());
  }

  const FileMembers& members() const { return m_; }
  uint64_t BadOffset() const { return DataOffset(m_.uri(0)) + kBadBlock * kBlock; }
  Bytes Good() const {
    return Bytes(data_.begin() + kBadBlock * kBlock, data_.begin() + (kBadBlock + 1) * kBlock);
  }
  // Garbage over block kBadBlock of copy `copy`'s backing file.
  void Corrupt(size_t copy, uint64_t seed) const {
    WriteFileAt(m_.file(copy), BadOffset(), RandomBytes(kBlock, seed));
  }
  Bytes BlockOf(size_t copy) const { return ReadFileRange(m_.file(copy), BadOffset(), kBlock); }

 private:
  FileMembers m_;
  Bytes data_;
};

const std::string kNoJobs = "\"jobs\": []";

TEST_SUITE_BEGIN("aggregator_scrub");

// No client reads anything here: only the scrub reads copy 1, which the read balancer may never
// have chosen.
TEST_CASE("scrub --repair finds a block corrupted on one copy and repairs it from the other") {
  Mirror mirror;
  mirror.Corrupt(1, 70);
  REQUIRE(mirror.BlockOf(1) != mirror.Good());
  {
    Served agg(mirror.members().uris());
    CheckOk(Ask(agg, "scrub", {"mir", "start", "--repair"}), "ok: scrub of mir started (repair)");
    const std::string json = AwaitStatus(agg, {kNoJobs});
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"scrub_blocks\": 64,"));
    CHECK(Contains(json, "\"scrub_errors\": 1,"));
    CHECK(Contains(json, "\"scrub_repaired\": 1,"));
    CHECK(Contains(json, "\"scrub_unrecoverable\": 0,"));
    CHECK_FALSE(Contains(json, "\"scrub_last_completed\": 0,"));
    CHECK(Contains(json, "\"reads\": 0,"));
    const std::string line =
        LineWithAll(agg.stderr_text(), {"scrub: checksum mismatch at volume offset 20480"});
    CHECK(Contains(line, "on member 1 " + mirror.members().uri(1)));
  }
  CHECK(mirror.BlockOf(1) == mirror.Good());
  CHECK(mirror.BlockOf(0) == mirror.Good());
  // The last result is in the superblock.
  const CommandResult inspect = RunAggregator({"inspect", mirror.members().uri(0)});
  CHECK(Contains(inspect.stdout_text, "scrub:        none; last errors at "));
}

TEST_CASE("scrub: a block bad on both copies is unrecoverable, logged with its volume offset") {
  Mirror mirror;
  mirror.Corrupt(0, 71);
  mirror.Corrupt(1, 72);
  Served agg(mirror.members().uris());
  CheckOk(Ask(agg, "scrub", {"mir", "start"}), "ok: scrub of mir started (repair)");
  const std::string json = AwaitStatus(agg, {kNoJobs});
  INFO("status:\n" << json);
  CHECK(Contains(json, "\"scrub_errors\": 2,"));
  CHECK(Contains(json, "\"scrub_repaired\": 0,"));
  CHECK(Contains(json, "\"scrub_unrecoverable\": 1,"));
  CHECK(Contains(LineWithAll(agg.stderr_text(), {"scrub: volume offset 20480"}),
                 "verifies on no copy: unrecoverable"));
}

TEST_CASE("scrub --check counts a bad copy and repairs nothing") {
  Mirror mirror;
  mirror.Corrupt(1, 73);
  const Bytes bad = mirror.BlockOf(1);
  {
    Served agg(mirror.members().uris());
    CheckOk(Ask(agg, "scrub", {"mir", "start", "--check"}), "ok: scrub of mir started (check)");
    const std::string json = AwaitStatus(agg, {kNoJobs});
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"scrub_errors\": 1,"));
    CHECK(Contains(json, "\"scrub_repaired\": 0,"));
  }
  CHECK(mirror.BlockOf(1) == bad);
}

// The throttle charges a scrub the data it reads: with 64 KiB written in every MiB, at 4 KiB/s
// the first steps (1 MiB each, a few in flight) go at once and each next one waits for 16 s: the
// scrub of 31 MiB is still under way whatever the machine's speed, also after the restart.
TEST_CASE("scrub pause, resume and stop: their answers, status, and a pause kept across restart") {
  Mirror mirror(32 * kMiB);
  {
    Served agg(mirror.members().uris());
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    for (uint64_t mib = 1; mib < 31; ++mib)
      REQUIRE_NBD_OK(c.Pwrite(RandomBytes(64 * kKiB, mib), mib * kMiB));
    REQUIRE_NBD_OK(c.Flush());
    CHECK_NBD_OK(c.Shutdown());
  }
  const std::vector<std::string> slow =
      Concat({"--resync-rate-min", "4K", "--resync-rate-max", "4K"}, mirror.members().uris());
  {
    Served agg(slow);
    CheckError(Ask(agg, "scrub", {"mir", "pause"}), "error: no scrub under way on volume mir");
    CheckOk(Ask(agg, "scrub", {"mir", "start"}), "ok: scrub of mir started (repair)");
    CheckError(Ask(agg, "scrub", {"mir", "start"}),
               "error: a scrub of volume mir is already under way");
    CheckOk(Ask(agg, "scrub", {"mir", "pause"}), "ok: scrub of mir paused");
    const std::string json = AwaitStatus(agg, {"\"kind\": \"scrub\""});
    INFO("status:\n" << json);
    CHECK(Contains(json,
                   "\"what\": \"scrubbing mir\", \"state\": \"paused\", \"detail\": "
                   "\"repair, 0 errors\""));
  }
  const CommandResult inspect = RunAggregator({"inspect", mirror.members().uri(1)});
  CHECK(Contains(inspect.stdout_text, "scrub:        repair, paused, cursor "));
  {
    Served agg(slow);
    CHECK(Contains(agg.stderr_text(), "volume mir: resuming the scrub (repair) at block "));
    std::string json = StatusJson(agg);
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"state\": \"paused\""));
    CheckOk(Ask(agg, "scrub", {"mir", "resume"}), "ok: scrub of mir resumed");
    json = StatusJson(agg);
    CHECK_FALSE(Contains(json, "\"state\": \"paused\""));
    CheckOk(Ask(agg, "scrub", {"mir", "stop"}), "ok: scrub of mir stopped");
    AwaitStatus(agg, {kNoJobs});
    CheckError(Ask(agg, "scrub", {"mir", "stop"}), "error: no scrub under way on volume mir");
  }
  const CommandResult after = RunAggregator({"inspect", mirror.members().uri(0)});
  CHECK(Contains(after.stdout_text, "scrub:        none; last none"));
}

TEST_CASE("resync-rate changes the limits in status at once; bad arguments get the exact error") {
  Mirror mirror;
  Served agg(Concat({"--resync-rate-min", "2M"}, mirror.members().uris()));
  CHECK(Contains(StatusJson(agg), "\"rate_min_bytes\": 2097152, \"rate_max_bytes\": 209715200"));
  CheckOk(Ask(agg, "resync-rate", {"mir", "--min", "5M", "--max", "50M"}),
          "ok: mir background rate 5 MiB/s to 50 MiB/s");
  CHECK(Contains(StatusJson(agg), "\"rate_min_bytes\": 5242880, \"rate_max_bytes\": 52428800"));
  CHECK(Contains(RunAggregator({"status", "--control", agg.control_path()}).stdout_text,
                 "mir              rate 5 MiB/s to 50 MiB/s\n"));
  CheckError(Ask(agg, "resync-rate", {"mir", "--min", "0", "--max", "50M"}),
             "error: bad number '0' (expected bytes per second such as 1M, more than 0)");
  CheckError(Ask(agg, "resync-rate", {"mir", "--min", "1M", "--max", "fast"}),
             "error: bad number 'fast' (expected bytes per second such as 1M, more than 0)");
  CheckError(Ask(agg, "resync-rate", {"mir", "--min", "100M", "--max", "1M"}),
             "error: the minimum 100 MiB/s is more than the maximum 1 MiB/s");
  CheckError(Ask(agg, "resync-rate", {"nope", "--min", "1M", "--max", "2M"}),
             "error: unknown volume 'nope'");
  CheckError(Ask(agg, "scrub", {"nope", "start"}), "error: unknown volume 'nope'");
  CHECK(Contains(StatusJson(agg), "\"rate_min_bytes\": 5242880, \"rate_max_bytes\": 52428800"));
}

TEST_CASE("scrub --repair on a linear volume is refused; --check runs") {
  FileMembers m(2, 8 * kMiB);
  CreateOk({"--name", "lin"}, m.uris());
  Served agg(m.uris());
  CheckError(Ask(agg, "scrub", {"lin", "start", "--repair"}),
             "error: linear volume lin has no copies to repair from: scrub it with check");
  CheckOk(Ask(agg, "scrub", {"lin", "start"}), "ok: scrub of lin started (check)");
  const std::string json = AwaitStatus(agg, {"\"scrub_last_clean\": 1", kNoJobs});
  CHECK(Contains(json, "\"scrub_errors\": 0,"));
}

TEST_CASE("scrub and resync-rate on a raw volume: not a checksummed volume") {
  FileMembers m(2, 4 * kMiB);
  Served agg(Concat({"--raw"}, m.uris()));
  const std::string error =
      "error: volume vol0 is not a checksummed volume (no scrub, no background jobs)";
  CheckError(Ask(agg, "scrub", {"vol0", "start"}), error);
  CheckError(Ask(agg, "resync-rate", {"vol0", "--min", "1M", "--max", "2M"}), error);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_scrub_test
