// fault_filters: faults injected by nbdkit filters in front of our plugin.
// - error: a member that answers a fifth of its writes and a tenth of its
//   reads with EIO. The aggregator resends them (on the same connections)
//   and the client never sees an error.
// - delay: a slow member costs latency only while it stays within
//   io-timeout; one slower than io-timeout makes a write fail with EIO once
//   its budget (--retries) is spent, with every attempt timed out.
#include <chrono>

#include "tests/fault/fault_fixture.h"

namespace dst::test::fault::fault_filters_test {
namespace {

constexpr uint64_t kChunk = 64 * kKiB;
constexpr uint64_t kMemberSize = 4 * kMiB;

TEST_SUITE_BEGIN("fault_filters");

TEST_CASE("error filter: EIO answers on writes and reads are resent, the client sees none") {
  TempDir dir("dst-fault-error");
  const std::vector<std::string> files = {dir.File("m0.img"), dir.File("m1.img")};
  Member flaky(files[0], kMemberSize, {"error"},
               {"error=EIO", "error-pwrite-rate=20%", "error-pread-rate=10%"});
  Member good(files[1], kMemberSize);
  Aggregator aggregator({"--raw", "--layout", "stripe", "--chunk", "64K", "--io-timeout", "1s",
                         "--keepalive", "1s", flaky.uri(), good.uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));

  // 4 MiB of random data in 64 KiB writes, 16 at a time, then read back
  // in 64 KiB reads, 16 at a time.
  constexpr uint64_t kTotal = 4 * kMiB, kPiece = 64 * kKiB, kDepth = 16;
  const Bytes data = RandomBytes(kTotal, 401);
  for (uint64_t base = 0; base < kTotal; base += kDepth * kPiece) {
    std::vector<int64_t> cookies;
    for (uint64_t off = base; off < base + kDepth * kPiece; off += kPiece)
      cookies.push_back(SubmitWrite(client, {data.data() + off, kPiece}, off));
    CHECK_NBD_OK(AwaitAll(client, cookies, 30s));
  }
  CHECK_NBD_OK(FlushFor(client));
  Bytes got(kTotal);
  for (uint64_t base = 0; base < kTotal; base += kDepth * kPiece) {
    std::vector<int64_t> cookies;
    for (uint64_t off = base; off < base + kDepth * kPiece; off += kPiece)
      cookies.push_back(SubmitRead(client, {got.data() + off, kPiece}, off));
    CHECK_NBD_OK(AwaitAll(client, cookies, 30s));
  }
  CHECK(got == data);
  CheckStripeOnFiles(files, kChunk, 0, data);

  const MemberStats s = QueryStats(aggregator, "vol0", 0);
  INFO(s.line());
  CHECK(s.Text("state") == "ready");
  CHECK(s.Count("errors") >= 1);
  CHECK(s.Count("resends") >= 1);
  CHECK(s.Count("resends") >= s.Count("errors"));
  CHECK(s.Count("failures") == 0);
  // An error answer is resent on the same connections: no reconnect.
  CHECK(s.Count("reconnects") == 0);
  CHECK(s.Count("timeouts") == 0);
  const MemberStats clean = QueryStats(aggregator, "vol0", 1);
  INFO(clean.line());
  CHECK(clean.Count("errors") == 0);
  CHECK(clean.Count("resends") == 0);
  // The injected errors are in nbdkit's log, none in the aggregator's.
  CHECK(Contains(flaky.stderr_text(), "injecting EIO error"));
  CHECK_FALSE(Contains(aggregator.stderr_text(), "error:"));
}

TEST_CASE("delay filter: writes 300ms slow with io-timeout 1s cost latency only") {
  TempDir dir("dst-fault-delay");
  const std::string file = dir.File("m0.img");
  Member slow(file, kMemberSize, {"delay"}, {"delay-write=300ms"});
  // The node runs one request of a connection at a time
  // (docs/nbdkit-plugin.md, "nbdkit versions and the thread model"): eight
  // writes at once need eight connections to be slow side by side rather
  // than one after another.
  Aggregator aggregator({"--raw", "--io-timeout", "1s", "--keepalive", "1s", "--retries", "2",
                         "--connections", "8", slow.uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));

  Bytes model(kMemberSize, 0);
  for (int i = 0; i < 4; ++i) {
    const Bytes data = RandomBytes(64 * kKiB, 410 + i);
    const uint64_t offset = i * 512 * kKiB;
    const auto start = SteadyClock::now();
    CHECK_NBD_OK(WriteFor(client, data, offset, 10s));
    CHECK(SecondsSince(start) >= 0.29);
    std::copy(data.begin(), data.end(), model.begin() + offset);
  }
  // Several at once, one per member connection: each waits its 300 ms, none
  // times out.
  std::vector<Bytes> parallel;
  std::vector<int64_t> cookies;
  for (int i = 0; i < 8; ++i) {
    parallel.push_back(RandomBytes(64 * kKiB, 420 + i));
    const uint64_t offset = 2 * kMiB + i * 128 * kKiB;
    cookies.push_back(SubmitWrite(client, parallel.back(), offset));
    std::copy(parallel.back().begin(), parallel.back().end(), model.begin() + offset);
  }
  CHECK_NBD_OK(AwaitAll(client, cookies, 20s));
  CHECK_NBD_OK(FlushFor(client));
  Bytes got(kMemberSize);
  CHECK_NBD_OK(ReadFor(client, got, 0));
  CHECK(got == model);
  CHECK(ReadFile(file) == model);

  const MemberStats s = QueryStats(aggregator, "vol0", 0);
  INFO(s.line());
  CHECK(s.Count("timeouts") == 0);
  CHECK(s.Count("reconnects") == 0);
  CHECK(s.Count("resends") == 0);
  CHECK(s.Count("errors") == 0);
  CHECK(s.Count("failures") == 0);
  CHECK(s.Count("latency_max_us") >= 300000);
  CHECK(s.Count("latency_max_us") < 1000000);
  CHECK(s.Text("epoch") == "1");
}

TEST_CASE("delay filter: writes 2 s slow with io-timeout 500ms and --retries 2 fail with EIO") {
  TempDir dir("dst-fault-delay");
  const std::string file = dir.File("m0.img");
  const Bytes old_data = RandomBytes(kMemberSize, 430);
  WriteFile(file, old_data);
  Member slow(file, kMemberSize, {"delay"}, {"delay-write=2000ms"});
  Aggregator aggregator(
      {"--raw", "--io-timeout", "500ms", "--keepalive", "1s", "--retries", "2", slow.uri()});
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(aggregator.uri()));

  const Bytes data = RandomBytes(64 * kKiB, 431);
  const auto start = SteadyClock::now();
  CHECK_NBD_ERR(WriteFor(client, data, kMiB, 15s), EIO);
  const double took = SecondsSince(start);
  INFO("the write failed after " << took << " s");
  // Three sends of 500 ms each, with reconnects in between: well under the
  // 2 s delay times three, and no sooner than the three deadlines.
  CHECK(took >= 1.5);
  CHECK(took < 4.0);

  const MemberStats s = QueryStats(aggregator, "vol0", 0);
  INFO(s.line());
  CHECK(s.Count("timeouts") >= 3);
  CHECK(s.Count("resends") == 2);
  CHECK(s.Count("failures") == 1);
  CHECK(s.Count("reconnects") >= 2);  // the third may still be under way
  // Reads are not delayed: the member still serves them.
  Bytes got(64 * kKiB);
  CHECK_NBD_OK(ReadFor(client, got, 0, 10s));
  CHECK(got == Bytes(old_data.begin(), old_data.begin() + 64 * kKiB));

  const std::string log = aggregator.stderr_text();
  INFO(log);
  CHECK_FALSE(LineWithAll(log, {"dst-aggregator: error: volume vol0: write of 65536 bytes at "
                                "volume offset 1048576 failed: member " +
                                    slow.uri() +
                                    ": write of 65536 bytes at member offset 1048576: gave up "
                                    "after 3 attempts in ",
                                "no answer within 500 ms to write of 65536 bytes"})
                  .empty());
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_filters_test
