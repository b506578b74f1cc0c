// fault_restart: an export node is SIGKILLed in the middle of a verified fio
// run through the aggregator and restarted on the same socket within the
// retry window. The client must see latency only: every write acknowledged
// and every block read back with its checksum.
#include <csignal>
#include <thread>

#include "tests/fault/fault_fixture.h"

namespace dst::test::fault::fault_restart_test {
namespace {

constexpr uint64_t kMemberSize = 24 * kMiB;

// fio's output must show a clean, fully verified run.
void CheckFioOutput(Process& fio) {
  INFO(JoinArgv(fio.argv()));
  INFO("stdout:\n" << fio.stdout_text());
  INFO("stderr:\n" << fio.stderr_text());
  CHECK(fio.exit_code() == 0);
  const std::string out = fio.stdout_text() + fio.stderr_text();
  CHECK_FALSE(Contains(out, "verify:"));
  CHECK_FALSE(Contains(out, "bad magic"));
  CHECK_FALSE(Contains(out, "error"));
  CHECK(Contains(fio.stdout_text(), "err= 0"));
  // The write phase and the verifying read phase both covered all 64 MiB.
  CHECK(Contains(fio.stdout_text(), "WRITE: bw="));
  CHECK(Contains(fio.stdout_text(), "READ: bw="));
  CHECK(CountOf(fio.stdout_text(), "io=64.0MiB") == 2);
}

TEST_SUITE_BEGIN("fault_restart");

TEST_CASE("fio verifies every block while a stripe member is killed and restarted") {
  TempDir dir("dst-fault-restart");
  std::vector<std::unique_ptr<Member>> members;
  std::vector<std::string> uris;
  for (int i = 0; i < 3; ++i) {
    members.push_back(
        std::make_unique<Member>(dir.File("m" + std::to_string(i) + ".img"), kMemberSize));
    uris.push_back(members.back()->uri());
  }
  std::vector<std::string> args = {"--raw", "--layout", "stripe", "--chunk", "64K"};
  args.insert(args.end(), {"--io-timeout", "1s", "--keepalive", "1s", "--retry-window", "30s"});
  args.insert(args.end(), uris.begin(), uris.end());
  Aggregator aggregator(args);

  // Random 4K writes over 64 MiB at depth 32, a flush every 32 writes, then
  // every block read back and checked (a few seconds in all).
  Process fio({kFio, "--name=dst-fault-restart", "--ioengine=nbd", "--uri=" + aggregator.uri(),
               "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=64M", "--fsync=32",
               "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
               "--output-format=normal"});

  // Kill member 1 once fio is well into its write phase: at depth 32 over
  // three members, writes are then in flight on it.
  const MemberStats before = WaitForStats(
      aggregator, "vol0", 1, [](const MemberStats& s) { return s.Count("ios") >= 500; }, 30s);
  REQUIRE_MESSAGE(fio.Running(), "fio ended before the fault:\n" << fio.stdout_text());
  CHECK(before.Count("reconnects") == 0);
  const auto killed_at = SteadyClock::now();
  members[1]->KillHard();
  std::this_thread::sleep_for(300ms);
  members[1]->RestartAfterKill();
  const double outage = SecondsSince(killed_at);
  INFO("member 1 was down for " << outage << " s");

  const std::optional<int> code = fio.Wait(60s);
  if (!code) fio.Kill(SIGKILL);
  REQUIRE_MESSAGE(code.has_value(), "fio did not finish within 60 s");
  CheckFioOutput(fio);

  // The member came back, under a new fencing epoch, and what was in flight
  // when it died was sent again; nothing failed to the client.
  const MemberStats stats = QueryStats(aggregator, "vol0", 1);
  INFO(stats.line());
  CHECK(stats.Text("state") == "ready");
  CHECK(stats.Text("fenced") == "yes");
  CHECK(stats.Count("epoch") >= 2);
  CHECK(stats.Count("reconnects") >= 1);
  CHECK(stats.Count("resends") >= 1);
  CHECK(stats.Count("failures") == 0);
  for (size_t other : {0, 2}) {
    const MemberStats s = QueryStats(aggregator, "vol0", other);
    INFO(s.line());
    CHECK(s.Count("reconnects") == 0);
    CHECK(s.Count("failures") == 0);
  }
  const std::string log = aggregator.stderr_text();
  INFO(log);
  CHECK(Contains(log, "info: member " + uris[1] + ": ready -> reconnecting: "));
  CHECK(Contains(log, "info: member " + uris[1] + ": reconnecting -> ready: fenced, epoch "));
  CHECK_FALSE(Contains(log, "gave up"));
  CHECK_FALSE(Contains(log, "-> failed"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_restart_test
