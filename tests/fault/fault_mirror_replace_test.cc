// fault_mirror_replace: `member replace` gives a current slot of a running 2-copy mirror a new
// export rebuilt beside the member it replaces, which serves until the new copy is complete
// (docs/redundancy.md, "Member commands"), with real export nodes, the real aggregator and real
// clients:
//   - under fio's verified random I/O at depth 32: the answer, the job in status, `[UU+C]`, the
//     completion line, no fio error, the new copy's data area byte-equal to member 0's, the old
//     export left alone, and restarts that find the new member current and refuse the old one;
//   - the new export node killed half-way: the replacement ends, the old member keeps the slot,
//     clients see no error and the set stays whole;
//   - the aggregator SIGKILLed half-way: the old member is still the slot's, the new export is
//     refused if named, and the same replacement run again succeeds;
//   - refusals that write nothing: a slot that is not current, a replacement already under way,
//     a live copy of the volume, an export of another size, an unknown volume.
#include <csignal>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fault_mirror_fixture.h"
#include "tests/fault/fio_run.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_replace_test {
namespace {

constexpr uint64_t kBlock = 4 * kKiB;
constexpr uint64_t kMemberSize = 16 * kMiB;
const std::string kVolume = "mir";
const std::string kJob = "replacing mir slot 1";
const std::string kStatsMark = "info: stats: volume mir integrity: ";

// `extra` (rates, ...) before the members.
std::vector<std::string> ServeArgs(std::vector<std::string> uris,
                                   std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--degrade-after", "1s", "--io-timeout", "500ms"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), uris.begin(), uris.end());
  return args;
}

// Background rates that keep a rebuild of a few MiB running for seconds, whatever the clients do.
const std::vector<std::string> kSlowRebuild = {"--resync-rate-min", "1M", "--resync-rate-max",
                                               "1M"};

// `count` pieces of 1 MiB back to back from the start of the volume: written blocks for a
// rebuild to copy, count MiB of them. Recorded block by block, as later writes may land in them.
void WritePieces(AggregatorServer& agg, uint64_t count, uint64_t seed, Written* written) {
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(agg.uri(kVolume)));
  for (uint64_t i = 0; i < count; ++i) {
    const Bytes data = RandomBytes(kMiB, seed * 1000 + i);
    REQUIRE_NBD_OK(WriteFor(client, data, i * kMiB));
    for (uint64_t at = 0; at < kMiB; at += kBlock)
      (*written)[i * kMiB + at] = Bytes(data.begin() + at, data.begin() + at + kBlock);
  }
  REQUIRE_NBD_OK(FlushFor(client));
  CHECK_NBD_OK(client.Shutdown());
}

CommandResult Replace(const AggregatorServer& agg, const std::string& volume, size_t slot,
                      const std::string& uri) {
  return AskMember(agg, {"replace", volume, std::to_string(slot), "--with", uri});
}

// `member replace` of slot `slot` by `uri` must answer that the replacement has started.
void ReplaceOk(const AggregatorServer& agg, size_t slot, const std::string& old_uri,
               const std::string& uri) {
  const CommandResult r = Replace(agg, kVolume, slot, uri);
  INFO("member replace: " << r.stdout_text << r.stderr_text);
  REQUIRE(r.exit_code == 0);
  CHECK(r.stdout_text == "ok: mir slot " + std::to_string(slot) + ": replacing " + old_uri +
                             " by " + uri + " (rebuilding)\n");
}

// A refusal whose error line says `part` somewhere.
void CheckErrorSays(const CommandResult& r, const std::string& part) {
  INFO("stdout:\n" << r.stdout_text << "stderr:\n" << r.stderr_text);
  CHECK(r.exit_code == 1);
  CHECK(r.stdout_text.empty());
  CHECK(Contains(LineWithAll(r.stderr_text, {"error: "}), part));
}

std::string Completed(size_t slot, const std::string& old_uri, const std::string& uri) {
  return "volume mir: slot " + std::to_string(slot) + " replaced: " + old_uri + " by " + uri +
         " (set 0 now [UU])";
}

// Bytes done by the job `what` in status --json, or nullopt when no such job is listed.
std::optional<uint64_t> JobDone(const std::string& json, const std::string& what) {
  std::smatch m;
  const std::regex re(
      "\"what\": \"" + what +
      "\", \"state\": \"[^\"]*\", \"detail\": \"[^\"]*\", \"done_bytes\": ([0-9]+)");
  if (!std::regex_search(json, m, re)) return std::nullopt;
  return std::stoull(m[1]);
}

// Polls status --json until the replacement job has done at least `bytes`; the status then.
std::string AwaitJobDone(const AggregatorServer& agg, uint64_t bytes, Ms timeout) {
  const auto start = SteadyClock::now();
  std::string json;
  while (SecondsSince(start) < std::chrono::duration<double>(timeout).count()) {
    json = StatusJson(agg);
    if (JobDone(json, kJob).value_or(0) >= bytes) return json;
    std::this_thread::sleep_for(100ms);
  }
  FAIL("the job '" << kJob << "' never got to " << bytes << " bytes:\n" << json);
  return json;
}

// Polls status --json until the replacement job is no longer listed (it ends at its next step
// once the replacement is over); the status then, or nullopt after `timeout`.
std::optional<std::string> AwaitNoJob(const AggregatorServer& agg, Ms timeout) {
  const auto start = SteadyClock::now();
  while (SecondsSince(start) < std::chrono::duration<double>(timeout).count()) {
    std::string json = StatusJson(agg);
    if (!Contains(json, kJob)) return json;
    std::this_thread::sleep_for(100ms);
  }
  return std::nullopt;
}

uint64_t Counter(AggregatorServer& agg, const std::string& name) {
  return QueryStatsLine(agg, kStatsMark).Count(name);
}

// The data area of the member behind `uri`, read from its backing file.
Bytes DataOf(const std::string& uri, const std::string& file) {
  const Area data = AreaOf(RunAggregator({"inspect", "--json", uri}).stdout_text, "data");
  return ReadFileRange(file, data.offset, data.size);
}

// A start of the aggregator on `uris` that must be refused because the member given for slot
// `slot` does not own it (rule not-owner).
void CheckNotOwner(const std::vector<std::string>& uris, size_t slot) {
  const StartFailure failure = AggregatorServer::StartExpectingFailure(
      FaultAggregatorOptions(ServeArgs(uris), AggregatorListen::kUnix));
  INFO("refused start:\n" << failure.stderr_text);
  CHECK(failure.exit_code == 1);
  const std::string error = LineWithAll(failure.stderr_text, {"error: "});
  CHECK(Contains(error, "not-owner: member "));
  CHECK(Contains(error, "does not own slot " + std::to_string(slot)));
}

// An export node on a file of its own, for the new copy.
struct Spare {
  Spare(const TempDir& dir, const std::string& name, uint64_t size)
      : file(dir.File(name)), member(std::make_unique<Member>(file, size)), uri(member->uri()) {}
  std::string file;
  std::unique_ptr<Member> member;
  std::string uri;
};

TEST_SUITE_BEGIN("fault_mirror_replace");

TEST_CASE("member replace under fio's verified I/O: the new copy takes the slot, byte-equal") {
  constexpr uint64_t kFioMemberSize = 64 * kMiB;
  Mirror mirror(kFioMemberSize);
  const std::string uri0 = mirror.member(0).uri(), old_uri = mirror.member(1).uri();
  TempDir dir("dst-fault-replace");
  Spare fresh(dir, "new.img", kFioMemberSize);
  // 2 MiB/s while fio runs (the floor, 1 MiB/s): the job is seen under way in status, then
  // raised to let it end under fio's I/O.
  auto agg = std::make_unique<Aggregator>(
      ServeArgs(mirror.uris(), {"--resync-rate-min", "1M", "--resync-rate-max", "2M"}));
  INFO("aggregator log:\n" << agg->stderr_text());
  Written ignored;
  WritePieces(*agg, 8, 81, &ignored);  // fio writes over them; the rebuild has them to copy

  // 48 MiB of random 4K I/O (half writes) at depth 32, then every written block read back and
  // checked: several seconds, longer than the replacement takes once its rate is raised.
  Process fio({kFio, "--name=dst-fault-mirror-replace", "--ioengine=nbd",
               "--uri=" + agg->uri(kVolume), "--rw=randrw", "--bs=4k", "--iodepth=32", "--size=48M",
               "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
               "--runtime=60", "--output-format=json"});
  WaitForStats(
      *agg, kVolume, 1, [](const MemberStats& s) { return s.Count("ios") >= 300; }, 30s);
  REQUIRE_MESSAGE(fio.Running(), "fio ended before the replacement:\n" << fio.stdout_text());
  const auto start = SteadyClock::now();
  ReplaceOk(*agg, 1, old_uri, fresh.uri);

  // Under way: the old member still holds the slot, the new copy catches up.
  const std::string json = StatusJson(*agg);
  const CommandResult table = RunAggregator({"status", "--control", agg->control_path()});
  {
    INFO("status:\n" << json << table.stdout_text);
    CHECK(Contains(json, "\"kind\": \"rebuild\", \"what\": \"" + kJob + "\""));
    CHECK(Contains(json, "\"sets\": [\"UU+C\"]"));
    CHECK(Contains(json, SlotState(1, old_uri, "active")));
    CHECK_FALSE(LineWithAll(table.stdout_text, {"mir ", "[UU+C]"}).empty());
  }
  const CommandResult faster = RunAggregator(
      {"resync-rate", "--control", agg->control_path(), "mir", "--min", "200M", "--max", "200M"});
  REQUIRE(faster.exit_code == 0);
  REQUIRE(agg->WaitForLog(Completed(1, old_uri, fresh.uri), 1, 40s));
  MESSAGE("replaced in " << SecondsSince(start) << " s");
  CHECK_MESSAGE(fio.Running(),
                "fio ended before the replacement did: writes to the new copy "
                "after its completion only");

  CHECK(FinishFio(fio).write.io_kib >= 16 * 1024);

  const std::string after = StatusJson(*agg);
  INFO("status:\n" << after);
  CHECK(Contains(after, "\"sets\": [\"UU\"]"));
  CHECK(Contains(after, SlotState(1, fresh.uri, "active")));
  CHECK_FALSE(Contains(after, kJob));
  CHECK(Contains(after, "\"request_errors\": 0"));
  CHECK(Counter(*agg, "rebuild_bytes") >= 8 * kMiB);
  CHECK(CountOf(agg->stderr_text(), "demoted to stale") == 0);
  // The old member is let go: its connections closed, nothing more sent to it.
  CHECK(Contains(agg->stderr_text(), "member " + old_uri + " abandoned: "));
  const MemberStats stats = QueryStats(*agg, kVolume, 1);
  CHECK(stats.Text("state") == "ready");
  CHECK(Contains(stats.line(), fresh.uri));

  // The old export gets nothing more: writes after the replacement leave its data as it was.
  const Bytes old_data = mirror.Data(1);
  Written written;
  WriteBlocks(*agg, 16 * kMiB, 40, 82, &written);
  CHECK(mirror.Data(1) == old_data);
  REQUIRE(agg->Stop() == 0);
  agg.reset();
  CHECK(DataOf(fresh.uri, fresh.file) == mirror.Data(0));

  // The next start names the new export for slot 1; the old one is a replaced member.
  {
    Aggregator again(ServeArgs({uri0, fresh.uri}));
    INFO("restarted aggregator log:\n" << again.stderr_text());
    const std::string log = again.stderr_text();
    CHECK(Contains(log, "volume mir: slot 0 (set 0 copy 0) " + uri0 + ": current: current: "));
    CHECK(Contains(log, "volume mir: slot 1 (set 0 copy 1) " + fresh.uri + ": current: current: "));
    CHECK(Contains(StatusJson(again), "\"sets\": [\"UU\"]"));
    CHECK_FALSE(Contains(log, "rebuilding"));
    CheckReadBack(again, written);
  }
  CheckNotOwner({uri0, old_uri}, 1);
}

TEST_CASE("the new export node killed half-way: the replacement fails, the old member stays") {
  Mirror mirror(kMemberSize);
  const std::string old_uri = mirror.member(1).uri();
  TempDir dir("dst-fault-replace");
  Spare fresh(dir, "new.img", kMemberSize);
  Aggregator agg(ServeArgs(mirror.uris(), kSlowRebuild));
  INFO("aggregator log:\n" << agg.stderr_text());
  Written written;
  WritePieces(agg, 8, 91, &written);
  ReplaceOk(agg, 1, old_uri, fresh.uri);
  AwaitJobDone(agg, 1 * kMiB, 20s);
  WriteBlocks(agg, 8 * kMiB, 40, 92, &written);  // to both copies and the new one

  fresh.member->KillHard();
  WriteBlocks(agg, 8 * kMiB, 40, 93, &written);  // the new copy fails them; clients do not see it
  const std::string failed = "volume mir: replacing slot 1 by " + fresh.uri + " failed: ";
  REQUIRE(agg.WaitForLog(failed, 1, 15s));
  const std::string line = LineWithAll(agg.stderr_text(), {failed});
  CHECK(Contains(line, "; slot 1 keeps " + old_uri));
  CHECK_FALSE(Contains(agg.stderr_text(), "replaced: "));

  WriteBlocks(agg, 8 * kMiB, 40, 94, &written);
  const std::optional<std::string> ended = AwaitNoJob(agg, 10s);
  const std::string json = ended.value_or(StatusJson(agg));
  INFO("status:\n" << json);
  CHECK_MESSAGE(ended.has_value(), "the job is still listed 10 s after the replacement failed");
  CHECK(Contains(json, "\"sets\": [\"UU\"]"));
  CHECK(Contains(json, SlotState(1, old_uri, "active")));
  CHECK(Contains(json, "\"request_errors\": 0"));
  CHECK(CountOf(agg.stderr_text(), "demoted to stale") == 0);
  CheckReadBack(agg, written);
  REQUIRE(agg.Stop() == 0);
  CHECK(mirror.Data(0) == mirror.Data(1));
}

TEST_CASE("the aggregator SIGKILLed half-way: the old member keeps the slot; replace again") {
  Mirror mirror(kMemberSize);
  const std::string uri0 = mirror.member(0).uri(), old_uri = mirror.member(1).uri();
  TempDir dir("dst-fault-replace");
  Spare fresh(dir, "new.img", kMemberSize);
  Written written;
  {
    AggregatorServer agg(
        FaultAggregatorOptions(ServeArgs(mirror.uris(), kSlowRebuild), AggregatorListen::kUnix));
    INFO("killed aggregator log:\n" << agg.stderr_text());
    WritePieces(agg, 8, 101, &written);
    ReplaceOk(agg, 1, old_uri, fresh.uri);
    // Past a checkpoint or so of the job (every few seconds): what the superblocks record of a
    // replacement under way is what the restart reads.
    AwaitJobDone(agg, 5 * kMiB, 30s);
    WriteBlocks(agg, 8 * kMiB, 40, 102, &written);
    agg.Kill(SIGKILL);
    REQUIRE(agg.Wait(10s).has_value());
    const std::string reports = agg.SanitizerReports();
    CHECK_MESSAGE(reports.empty(), reports);
  }

  // The new export does not own slot 1: named in its place, it is refused.
  CheckNotOwner({uri0, fresh.uri}, 1);

  Aggregator agg(ServeArgs(mirror.uris()));
  INFO("aggregator log:\n" << agg.stderr_text());
  const std::string json = StatusJson(agg);
  {
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"sets\": [\"UU\"]"));
    CHECK(Contains(json, SlotState(1, old_uri, "active")));
    CHECK_FALSE(Contains(json, kJob));
  }
  CheckReadBack(agg, written);

  // The same new export again: formatted over (it holds no live copy) and rebuilt to the end.
  ReplaceOk(agg, 1, old_uri, fresh.uri);
  WriteBlocks(agg, 8 * kMiB, 40, 103, &written);
  REQUIRE(agg.WaitForLog(Completed(1, old_uri, fresh.uri), 1, 30s));
  CHECK(Contains(StatusJson(agg), SlotState(1, fresh.uri, "active")));
  CheckReadBack(agg, written);
  REQUIRE(agg.Stop() == 0);
  CHECK(DataOf(fresh.uri, fresh.file) == mirror.Data(0));
}

TEST_CASE("member replace refusals write nothing") {
  Mirror mirror(kMemberSize);
  const std::string uri0 = mirror.member(0).uri(), uri1 = mirror.member(1).uri();
  TempDir dir("dst-fault-replace");
  Aggregator agg(ServeArgs(mirror.uris(), kSlowRebuild));
  INFO("aggregator log:\n" << agg.stderr_text());
  Written written;
  WritePieces(agg, 8, 111, &written);  // 8 s of rebuild at 1 MiB/s
  Spare spare(dir, "spare.img", kMemberSize);
  CheckCommandRefused(Replace(agg, "nope", 1, spare.uri), "unknown volume 'nope'");

  // A live copy of this volume: member 0, and the slot's own member.
  const std::string generation = InspectGeneration(uri0);
  const Bytes data0 = mirror.Data(0), data1 = mirror.Data(1);
  CheckErrorSays(Replace(agg, kVolume, 1, uri0), "not formatted over");
  CheckErrorSays(Replace(agg, kVolume, 0, uri0), "not formatted over");
  CheckErrorSays(Replace(agg, kVolume, 1, uri1), "not formatted over");
  CHECK(InspectGeneration(uri0) == generation);
  CHECK(InspectGeneration(uri1) == generation);
  CHECK(mirror.Data(0) == data0);
  CHECK(mirror.Data(1) == data1);

  Spare big(dir, "big.img", 2 * kMemberSize);
  CheckCommandRefused(Replace(agg, kVolume, 1, big.uri),
                      big.uri +
                          " has 32 MiB (33554432 bytes); slot 1 of mir needs exactly 16 MiB "
                          "(16777216 bytes), the size of its member");
  CHECK(ReadFileRange(big.file, 0, 64 * kKiB) == Bytes(64 * kKiB, 0));

  // One replacement at a time in the volume, whichever slot the second one names.
  ReplaceOk(agg, 1, uri1, spare.uri);
  Spare second(dir, "second.img", kMemberSize);
  CheckErrorSays(Replace(agg, kVolume, 0, second.uri), "a replacement is under way");
  CheckErrorSays(Replace(agg, kVolume, 1, second.uri), "a replacement is under way");
  CHECK(ReadFileRange(second.file, 0, 64 * kKiB) == Bytes(64 * kKiB, 0));
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"UU+C\"]"));
  const CommandResult faster = RunAggregator(
      {"resync-rate", "--control", agg.control_path(), "mir", "--min", "200M", "--max", "200M"});
  REQUIRE(faster.exit_code == 0);
  REQUIRE(agg.WaitForLog(Completed(1, uri1, spare.uri), 1, 30s));

  // Slot 1's new member lost for good: a stale slot has nothing to keep serving.
  WriteBlocks(agg, 8 * kMiB, 20, 112, &written);
  spare.member->KillHard();
  WriteBlocks(agg, 8 * kMiB, 20, 113, &written);
  REQUIRE(agg.WaitForLog("demoted to stale (set", 1, 10s));
  CheckCommandRefused(Replace(agg, kVolume, 1, second.uri),
                      "slot 1 of mir is stale: nothing serves from it to keep; use member add");
  CHECK(ReadFileRange(second.file, 0, 64 * kKiB) == Bytes(64 * kKiB, 0));
  CheckReadBack(agg, written);
  CHECK(Contains(StatusJson(agg), "\"sets\": [\"U_\"]"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_replace_test
