// fault_stop: an export node that stops answering (SIGSTOP) for longer than
// io-timeout, while a client has writes and reads outstanding on it. The
// aggregator times the I/O out, reconnects once the node answers again
// (SIGCONT) and resends: the client sees latency, no error, correct data.
//
// Each step waits for what it needs to have happened, not for a time that
// is usually enough: the node is stopped (every thread of it, as /proc
// shows), the aggregator has timed its I/O out, and only then is the I/O
// checked to be still outstanding and the node resumed.
#include <dirent.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <thread>

#include "tests/fault/fault_fixture.h"

namespace dst::test::fault::fault_stop_test {
namespace {

constexpr uint64_t kChunk = 64 * kKiB;
constexpr uint64_t kMemberSize = 4 * kMiB;

// Whether every thread of `pid` is stopped by a signal ("T" in /proc):
// kill() returns before the target has stopped.
bool AllThreadsStopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return false;
  bool stopped = true, any = false;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream in(tasks + "/" + entry->d_name + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size()) continue;  // the thread ended
    any = true;
    stopped = stopped && stat[close + 2] == 'T';
  }
  ::closedir(dir);
  return any && stopped;
}

bool WaitUntilStopped(pid_t pid, Ms timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!AllThreadsStopped(pid)) {
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST_SUITE_BEGIN("fault_stop");

TEST_CASE("a member stopped for 2 s with io-timeout 500ms: the I/O waits, then completes") {
  TempDir dir("dst-fault-stop");
  const std::vector<std::string> files = {dir.File("m0.img"), dir.File("m1.img")};
  // Member 0 gets --threads=1: nbdkit 1.32 (Debian 12) aborts when two
  // worker threads of one connection fail to send replies on a connection
  // its client has dropped ("raw_send_socket: Assertion `sock >= 0'
  // failed", a race between the status check and shutdown(SHUT_WR) that
  // later nbdkit fixed). Stopping it with many requests queued on each
  // connection hits that race; one worker per connection cannot.
  NbdkitOptions stopped = PluginMemberOptions(files[0], kMemberSize);
  stopped.nbdkit_flags.push_back("--threads=1");
  Member m0(stopped), m1(files[1], kMemberSize);
  Aggregator aggregator({"--raw", "--layout", "stripe", "--chunk", "64K", "--io-timeout", "500ms",
                         "--keepalive", "1s", m0.uri(), m1.uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));

  // Data in place before the fault, over both members.
  const Bytes old_data = RandomBytes(2 * kMiB, 201);
  REQUIRE_NBD_OK(WriteFor(client, old_data, 0));
  REQUIRE_NBD_OK(FlushFor(client));

  m0.Kill(SIGSTOP);
  REQUIRE(WaitUntilStopped(m0.pid(), 10s));
  const auto stopped_at = SteadyClock::now();
  // New data over the first MiB, and a read of the second: both need
  // member 0 (every other 64K chunk is on it).
  const Bytes new_data = RandomBytes(kMiB, 202);
  Bytes read_back(kMiB);
  const std::vector<int64_t> cookies = {SubmitWrite(client, new_data, 0),
                                        SubmitRead(client, read_back, kMiB), SubmitFlush(client)};
  // Until the aggregator has timed member 0's I/O out (the client is polled
  // meanwhile, so that its requests go out), and for 2 s at least.
  MemberStats timed_out;
  const auto deadline = stopped_at + 30s;
  while (SteadyClock::now() < deadline) {
    PollFor(client, 100ms);
    timed_out = QueryStats(aggregator, "vol0", 0);
    if (timed_out.Count("timeouts") >= 1) break;
  }
  INFO("member 0 while stopped: " << timed_out.line());
  REQUIRE(timed_out.Count("timeouts") >= 1);
  PollFor(client,
          std::max(Ms(0), std::chrono::duration_cast<Ms>(stopped_at + 2s - SteadyClock::now())));
  // Nothing could complete while member 0 was stopped, and nothing failed.
  {
    INFO("aggregator log:\n" << aggregator.stderr_text());
    CHECK(InFlight(client) == 3);
  }
  m0.Kill(SIGCONT);

  CHECK_NBD_OK(AwaitAll(client, cookies, 20s));
  const double latency = SecondsSince(stopped_at);
  INFO("the I/O took " << latency << " s");
  CHECK(latency >= 2.0);
  CHECK(read_back == Bytes(old_data.begin() + kMiB, old_data.end()));

  Bytes whole(2 * kMiB);
  CHECK_NBD_OK(ReadFor(client, whole, 0));
  Bytes want = old_data;
  std::copy(new_data.begin(), new_data.end(), want.begin());
  CHECK(whole == want);
  CheckStripeOnFiles(files, kChunk, 0, want);

  const MemberStats s0 = QueryStats(aggregator, "vol0", 0);
  INFO(s0.line());
  CHECK(s0.Text("state") == "ready");
  CHECK(s0.Count("timeouts") >= 1);
  CHECK(s0.Count("reconnects") >= 1);
  CHECK(s0.Count("resends") >= 1);
  CHECK(s0.Count("failures") == 0);
  CHECK(s0.Count("epoch") >= 2);
  const MemberStats s1 = QueryStats(aggregator, "vol0", 1);
  INFO(s1.line());
  CHECK(s1.Count("timeouts") == 0);
  CHECK(s1.Count("reconnects") == 0);

  const std::string log = aggregator.stderr_text();
  INFO(log);
  CHECK(Contains(
      log, "info: member " + m0.uri() + ": ready -> reconnecting: no answer within 500 ms to "));
  CHECK(Contains(log, "info: member " + m0.uri() + ": reconnecting -> ready: fenced, epoch "));
  CHECK_FALSE(Contains(log, "error:"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_stop_test
