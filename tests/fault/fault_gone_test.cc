// fault_gone: a member that dies for good. Its volume's requests fail with
// EIO once the retry window is spent, the log says which request, volume
// range and member gave up and why, the member shows as failed, and the
// aggregator keeps serving the other volume, which never notices.
#include <libnbd.h>

#include "tests/fault/fault_fixture.h"

namespace dst::test::fault::fault_gone_test {
namespace {

constexpr uint64_t kChunk = 64 * kKiB;
constexpr uint64_t kMemberSize = 4 * kMiB;

std::string Quoted(const std::string& s) {
  return "\"" + s + "\"";
}

TEST_SUITE_BEGIN("fault_gone");

TEST_CASE("a member killed for good: EIO after the retry window, the other volume goes on") {
  TempDir dir("dst-fault-gone");
  const std::vector<std::string> beta_files = {dir.File("b0.img"), dir.File("b1.img")};
  Member doomed(dir.File("a0.img"), kMemberSize);
  Member b0(beta_files[0], kMemberSize), b1(beta_files[1], kMemberSize);
  const std::string socket = dir.File("agg.sock");
  // Transaction settings at the top level of the config.
  const std::string config = "unix = [" + Quoted(socket) +
                             "]\n"
                             "io-timeout = \"500ms\"\n"
                             "retry-window = \"2s\"\n"
                             "keepalive = \"1s\"\n"
                             "[[volume]]\nname = \"alpha\"\nlayout = \"linear\"\nmembers = [" +
                             Quoted(doomed.uri()) +
                             "]\n"
                             "[[volume]]\nname = \"beta\"\nlayout = \"stripe\"\nchunk = \"64K\"\n"
                             "members = [" +
                             Quoted(b0.uri()) + ", " + Quoted(b1.uri()) + "]\n";
  Aggregator aggregator({"--raw", "--config", WriteConfig(dir, config, "agg.toml")},
                        AggregatorListen::kFromArgs);
  NbdClient alpha, beta;
  REQUIRE_NBD_OK(alpha.Connect("nbd+unix:///alpha?socket=" + socket));
  REQUIRE_NBD_OK(beta.Connect("nbd+unix:///beta?socket=" + socket));

  const Bytes alpha_data = RandomBytes(64 * kKiB, 301);
  REQUIRE_NBD_OK(WriteFor(alpha, alpha_data, 0));
  Bytes beta_model(2 * kMemberSize, 0);

  doomed.KillHard();
  const auto start = SteadyClock::now();
  const int64_t doomed_write = SubmitWrite(alpha, alpha_data, kMiB);

  // While alpha's write waits for its member, beta serves at full speed.
  uint64_t seed = 310;
  int beta_rounds = 0;
  NbdStatus alpha_status;
  for (;;) {
    const Bytes data = RandomBytes(256 * kKiB, ++seed);
    const uint64_t offset = (seed % 24) * 256 * kKiB + 4096;
    const auto op_start = SteadyClock::now();
    CHECK_NBD_OK(WriteFor(beta, data, offset, 5s));
    Bytes got(data.size());
    CHECK_NBD_OK(ReadFor(beta, got, offset, 5s));
    CHECK(got == data);
    CHECK(SecondsSince(op_start) < 1.0);
    std::copy(data.begin(), data.end(), beta_model.begin() + offset);
    ++beta_rounds;
    const int done = nbd_aio_command_completed(alpha.handle(), doomed_write);
    if (done != 0) {
      if (done == -1) alpha_status = LastNbdError();
      break;
    }
    if (SecondsSince(start) > 10) {
      alpha_status = {ETIME, "no answer within 10 s"};
      break;
    }
    PollFor(alpha, 20ms);
  }
  const double gave_up_after = SecondsSince(start);
  INFO("alpha's write ended after " << gave_up_after << " s, beta did " << beta_rounds
                                    << " write+read rounds meanwhile");
  // EIO, once the window (2 s) is spent, within one io-timeout and a
  // little slack after it.
  CHECK_MESSAGE(alpha_status.err == EIO, alpha_status);
  CHECK(gave_up_after >= 1.5);
  CHECK(gave_up_after < 2.0 + 0.5 + 0.5);
  CHECK(beta_rounds >= 5);

  const std::string uri = doomed.uri();
  CHECK_MESSAGE(WaitForText([&] { return aggregator.stderr_text(); },
                            "member " + uri + ": reconnecting -> failed: unreachable for ", 5s),
                aggregator.stderr_text());
  // A failed member's I/O fails at once; the volume's other requests too.
  Bytes buf(64 * kKiB);
  const auto failed_read = SteadyClock::now();
  CHECK_NBD_ERR(ReadFor(alpha, buf, 0, 5s), EIO);
  CHECK(SecondsSince(failed_read) < 0.5);
  CHECK_NBD_ERR(WriteFor(alpha, alpha_data, 0, 5s), EIO);

  // Beta is untouched: all it holds reads back, and is where the layout
  // puts it.
  Bytes whole(beta_model.size());
  CHECK_NBD_OK(ReadFor(beta, whole, 0));
  CHECK(whole == beta_model);
  CHECK_NBD_OK(FlushFor(beta));
  CheckStripeOnFiles(beta_files, kChunk, 0, beta_model);
  // The aggregator is still up and takes new clients.
  CHECK(aggregator.Running());
  NbdClient late;
  CHECK_NBD_OK(late.Connect("nbd+unix:///beta?socket=" + socket));

  const MemberStats gone = QueryStats(aggregator, "alpha", 0);
  INFO(gone.line());
  CHECK(gone.Text("state") == "failed");
  CHECK(gone.Count("failures") >= 3);
  CHECK(gone.Count("connect_failures") >= 1);
  for (size_t i : {0, 1}) {
    const MemberStats s = QueryStats(aggregator, "beta", i);
    INFO(s.line());
    CHECK(s.Text("state") == "ready");
    CHECK(s.Count("failures") == 0);
    CHECK(s.Count("reconnects") == 0);
  }

  // The log names the volume range, the member, the budget and the cause.
  const std::string log = aggregator.stderr_text();
  INFO(log);
  const std::string gave_up = LineWithAll(
      log, {"dst-aggregator: error: volume alpha: write of 65536 bytes at volume offset 1048576 "
            "failed: member " +
                uri + ": write of 65536 bytes at member offset 1048576: gave up after ",
            " attempts in "});
  CHECK_MESSAGE(!gave_up.empty(), "no gave-up line for the write");
  CHECK(Contains(log, "info: member " + uri + ": ready -> reconnecting: "));
  CHECK_FALSE(Contains(log, "error: volume beta"));
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::fault::fault_gone_test
