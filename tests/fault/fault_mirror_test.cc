// A mirror loses an export node for good while a client writes and reads: the client sees no
// error, the copy is demoted within --degrade-after (logged, shown by status), and the survivor's
// superblock records it stale in a new generation. The node is killed (SIGKILL: connections reset)
// or stopped (SIGTERM: nbdkit answers what is in flight with ESHUTDOWN, as a newer owner's fence
// does, and must not be taken for one).
#include <csignal>
#include <functional>
#include <string>

#include "tests/fault/fault_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_mirror_test {
namespace {

TEST_SUITE_BEGIN("fault_mirror");

// Runs the client against a mirror whose slot 1 is lost by `lose` at iteration 20; returns the
// aggregator's log.
std::string LoseCopyUnderIo(const std::function<void(Member&)>& lose) {
  TempDir dir("dst-fault-mirror");
  constexpr uint64_t kSize = 8 * kMiB;
  Member m0(dir.File("m0.img"), kSize);
  Member m1(dir.File("m1.img"), kSize);
  const std::vector<std::string> uris = {m0.uri(), m1.uri()};
  CreateOk({"--name", "mir", "--layout", "mirror"}, uris);
  const std::string generation_before = InspectGeneration(m0.uri());
  std::string log;
  {
    Aggregator agg({"--degrade-after", "2s", "--io-timeout", "1s", m0.uri(), m1.uri()});
    NbdClient c;
    REQUIRE_NBD_OK(c.Connect(agg.uri("mir")));
    // 64 KiB blocks over the first 2 MiB, each written then read back; bounded in count and time.
    constexpr uint64_t kChunk = 64 * kKiB;
    const auto start = SteadyClock::now();
    int errors = 0;
    for (int i = 0; i < 400 && SecondsSince(start) < 15; ++i) {
      if (i == 20) lose(m1);
      const uint64_t offset = (i % 32) * kChunk;
      const Bytes data = RandomBytes(kChunk, 100 + i);
      const NbdStatus w = WriteFor(c, data, offset, 10s);
      Bytes back(kChunk);
      const NbdStatus r = ReadFor(c, back, offset, 10s);
      if (!w.ok() || !r.ok() || back != data) {
        ++errors;
        MESSAGE("iteration " << i << ": write " << w << ", read " << r);
      }
      if (i > 20 && Contains(agg.stderr_text(), "demoted to stale (set") && i > 60) break;
    }
    CHECK(errors == 0);
    CHECK(FlushFor(c).ok());
    CHECK(WaitForText([&] { return agg.stderr_text(); }, "demoted to stale (set", 10s));
    const std::string line = LineWithAll(agg.stderr_text(), {"demoted to stale (set"});
    CHECK(Contains(line, "volume mir: member 1"));
    CHECK(Contains(line, "[U_]"));
    const std::string json = StatusJson(agg);
    INFO("status:\n" << json);
    CHECK(Contains(json, "\"sets\": [\"U_\"]"));
    CHECK(Contains(json, "{\"slot\": 1, \"uri\": \"" + m1.uri() + "\", \"state\": \"stale\""));
    CHECK_FALSE(Contains(json,
                         "\"stale_since\": 0, \"repaired_blocks\": 0, \"read_failovers\": "
                         "0, \"write_mostly\": false}]"));  // slot 1's stale_since is set
    CHECK_NBD_OK(c.Shutdown());
    log = agg.stderr_text();
  }
  const std::string survivor = RunAggregator({"inspect", "--json", m0.uri()}).stdout_text;
  CHECK(InspectGeneration(m0.uri()) != generation_before);
  CHECK(Contains(survivor, "\"stale\""));
  return log;
}

TEST_CASE("a copy killed under writes and reads: no client error, demoted to stale") {
  LoseCopyUnderIo([](Member& m) { m.KillHard(); });
}

TEST_CASE(
    "a copy stopped under writes and reads: no client error, demoted, not taken for a fence") {
  const std::string log = LoseCopyUnderIo([](Member& m) { m.Kill(SIGTERM); });
  INFO("aggregator log:\n" << log);
  CHECK_FALSE(Contains(log, "fenced by a newer owner"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_mirror_test
