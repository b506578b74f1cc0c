// fault_stagelog: a checksummed stripe served through its staging log (serve --log) while both of
// its export nodes are stopped (SIGSTOP) for far longer than the retry window. What a user
// checks: fio writes and verifies every block with no error while the nodes are stopped (the
// writes are acknowledged from the log, the verify pass reads them from it); status shows the
// log holding them, not destaged; after SIGCONT the log drains (D reaches the head) and the
// members alone, served again without the log, hold exactly what fio wrote (fio's verify-only
// pass over the same job).
#include <csignal>
#include <thread>

#include "tests/fault/fault_fixture.h"
#include "tests/fault/fio_run.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::fault::fault_stagelog_test {
namespace {

constexpr uint64_t kMemberSize = 24 * kMiB;
constexpr auto kRetryWindow = 2s;
// How long the nodes stay stopped at least: the retry window several times over.
constexpr auto kStoppedFor = 3 * kRetryWindow;

// fio's job: 8 MiB of random 4K writes at depth 16, each block once, then every block read back
// and checked. With `verify_only` it writes nothing and checks what the same job wrote before.
Argv FioJob(const std::string& uri, bool verify_only) {
  Argv argv = {kFio,
               "--name=dst-fault-stagelog",
               "--ioengine=nbd",
               "--uri=" + uri,
               "--rw=randwrite",
               "--bs=4k",
               "--iodepth=16",
               "--size=8M",
               "--verify=crc32c",
               "--do_verify=1",
               "--verify_fatal=1",
               "--verify_state_save=0",
               "--randseed=4242",
               "--runtime=60",
               "--output-format=json"};
  if (verify_only) argv.push_back("--verify_only=1");
  return argv;
}

TEST_SUITE_BEGIN("fault_stagelog");

TEST_CASE("fio writes and verifies through the log while both members are stopped") {
  TempDir dir("dst-fault-stagelog");
  Member m0(dir.File("m0.img"), kMemberSize), m1(dir.File("m1.img"), kMemberSize);
  const std::vector<std::string> uris = {m0.uri(), m1.uri()};
  CreateOk({"--name", "vol", "--layout", "stripe", "--chunk", "64K"}, uris);
  const std::string log = dir.File("vol.log");
  std::vector<std::string> args = {"--io-timeout", "500ms", "--retry-window", "2s",
                                   "--log",        log,     "--log-size",     "48M"};
  args.insert(args.end(), uris.begin(), uris.end());

  {
    Aggregator agg(args);
    m0.Kill(SIGSTOP);
    m1.Kill(SIGSTOP);
    const auto stopped_at = SteadyClock::now();
    // Every 4K write takes 8K of log (a header page and its data): 16 MiB of 48.
    Process fio(FioJob(agg.uri("vol"), false));
    const FioReport report = FinishFio(fio);
    CHECK(report.write.io_kib == 8 * 1024);
    CHECK(report.read.io_kib == 8 * 1024);
    const std::string held = StatusJson(agg);
    INFO("status while the members are stopped:\n" << held);
    CHECK(JsonNumber(held, "head_sequence") >= 2048);
    CHECK(JsonNumber(held, "destaged_sequence") == 0);
    CHECK(JsonNumber(held, "pending_bytes") >= int64_t{16 * kMiB});
    CHECK(Contains(held, "\"request_errors\": 0"));
    // The nodes stay stopped well past the retry window: the destager's attempts fail meanwhile.
    const auto stop_until = stopped_at + kStoppedFor;
    while (SteadyClock::now() < stop_until)
      std::this_thread::sleep_for(100ms);
    m0.Kill(SIGCONT);
    m1.Kill(SIGCONT);

    const std::optional<double> drained = WaitForStatus(agg, "\"pending_bytes\": 0,", 60s);
    const std::string after = StatusJson(agg);
    INFO("status after SIGCONT:\n" << after);
    INFO("aggregator:\n" << agg.stderr_text());
    REQUIRE(drained.has_value());
    MESSAGE("the log drained " << *drained << " s after the members resumed");
    CHECK(JsonNumber(after, "destaged_sequence") == JsonNumber(after, "head_sequence"));
    // The destager met the outage and kept the records: not a vacuous pass.
    CHECK(Contains(LineWithAll(agg.stderr_text(), {"staging log " + log + ": applying record"}),
                   "failed: Input/output error; retrying (writes still go to the log)"));
    CHECK(Contains(after, "\"request_errors\": 0"));
  }

  // The members alone, without the log, hold every block fio wrote.
  std::vector<std::string> plain(uris);
  Aggregator agg(plain);
  Process verify(FioJob(agg.uri("vol"), true));
  FinishFio(verify);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_stagelog_test
