// fault_mirror_fio: fio's nbd engine, random 4K reads and writes at depth 32 with crc32c
// verification, on a 2-copy mirror (plain and encrypted) and on a raid10 of four; one export
// node is SIGKILLed for
// good in the middle of the write phase. What a user checks: fio finishes with exit 0, no error
// and no verify failure (its JSON report), every block it wrote read back and verified, the
// killed slot is stale in `status` within --degrade-after plus a margin, and no write waited
// much longer than --degrade-after (fio's longest write completion latency).
#include <csignal>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fio_run.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_fio_test {
namespace {

constexpr uint64_t kMemberSize = 24 * kMiB;
constexpr auto kDegradeAfter = 2s;
constexpr auto kIoTimeout = 1s;
// The members of a copy give up after --degrade-after; the demotion's superblock update and a
// loaded machine (sanitizers, two cores shared) get the rest.
constexpr auto kMargin = 3s;

struct Layout {
  const char* name;
  std::vector<std::string> create_options;
  size_t members;
  size_t victim;           // the slot killed for good
  std::string sets_after;  // status --json "sets" once it is demoted
  bool encrypted = false;  // create --encrypt, served with a key file
};

void RunFioThroughKill(const Layout& layout) {
  TempDir dir("dst-fault-mirror-fio");
  std::vector<std::unique_ptr<Member>> members;
  std::vector<std::string> uris;
  for (size_t i = 0; i < layout.members; ++i) {
    members.push_back(
        std::make_unique<Member>(dir.File("m" + std::to_string(i) + ".img"), kMemberSize));
    uris.push_back(members.back()->uri());
  }
  std::vector<std::string> create = layout.create_options;
  std::vector<std::string> args = {"--degrade-after", "2s", "--io-timeout", "1s"};
  if (layout.encrypted) {
    const std::string key = dir.File("vol.key");
    WriteKeyFile(key, RandomBytes(32, 77));
    create.insert(create.end(), {"--encrypt", "--key-file", key});
    args.insert(args.end(), {"--key-file", key});
  }
  CreateOk(create, uris);
  args.insert(args.end(), uris.begin(), uris.end());
  Aggregator agg(args);

  // 16 MiB of random 4K I/O (half writes) at depth 32, then every written block read back and
  // checked: a few seconds.
  Process fio({kFio, "--name=dst-fault-mirror-fio", "--ioengine=nbd", "--uri=" + agg.uri("vol"),
               "--rw=randrw", "--bs=4k", "--iodepth=32", "--size=16M", "--verify=crc32c",
               "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--runtime=60",
               "--output-format=json"});
  // Kill the victim once fio is into its write phase: writes are in flight on every copy.
  WaitForStats(
      agg, "vol", layout.victim, [](const MemberStats& s) { return s.Count("ios") >= 300; }, 30s);
  REQUIRE_MESSAGE(fio.Running(), "fio ended before the fault:\n" << fio.stdout_text());
  members[layout.victim]->KillHard();
  const std::string victim = uris[layout.victim];
  const std::optional<double> stale_after =
      WaitForStatus(agg, SlotState(layout.victim, victim, "stale"), kDegradeAfter + kMargin + 5s);
  REQUIRE_MESSAGE(stale_after.has_value(), "slot never stale:\n" << StatusJson(agg));
  MESSAGE(std::string(layout.name)
          << ": slot " << layout.victim << " stale " << *stale_after << " s after the kill");
  CHECK(*stale_after < std::chrono::duration<double>(kDegradeAfter + kIoTimeout + kMargin).count());

  INFO("aggregator:\n" << agg.stderr_text());
  const FioReport report = FinishFio(fio);
  // The write phase wrote 8 MiB or so; the verify pass read all of it back on top of the random
  // reads.
  CHECK(report.write.io_kib >= 4 * 1024);
  CHECK(report.read.io_kib >= report.write.io_kib);
  const double write_max_s = report.write.clat_max_ns / 1e9;
  MESSAGE(std::string(layout.name) << ": longest write " << write_max_s << " s, longest read "
                                   << report.read.clat_max_ns / 1e9 << " s");
  CHECK(write_max_s < std::chrono::duration<double>(kDegradeAfter + kIoTimeout + kMargin).count());
  // A write held by the dead copy waited for it: the bound is not vacuous.
  CHECK(write_max_s > 0.5);

  const std::string json = StatusJson(agg);
  INFO("status:\n" << json);
  CHECK(Contains(json, "\"sets\": [" + layout.sets_after + "]"));
  CHECK(Contains(json, "\"request_errors\": 0"));
  const std::string line = LineWithAll(agg.stderr_text(), {"demoted to stale (set"});
  CHECK(Contains(line, "volume vol: member " + std::to_string(layout.victim) + " " + victim));
  CHECK(CountOf(agg.stderr_text(), "demoted to stale (set") == 1);
}

TEST_SUITE_BEGIN("fault_mirror_fio");

TEST_CASE("fio verifies every block on a mirror of two while one copy is killed for good") {
  RunFioThroughKill({"mirror", {"--name", "vol", "--layout", "mirror"}, 2, 1, "\"U_\""});
}

TEST_CASE("fio verifies every block on a raid10 of four while one copy is killed for good") {
  RunFioThroughKill({"raid10",
                     {"--name", "vol", "--layout", "raid10", "--copies", "2", "--chunk", "64K"},
                     4,
                     2,
                     "\"UU\", \"_U\""});
}

TEST_CASE("fio verifies every block on an encrypted mirror of two while one copy is killed") {
  RunFioThroughKill(
      {"encrypted mirror", {"--name", "vol", "--layout", "mirror"}, 2, 0, "\"_U\"", true});
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_fio_test
