// Unit tests of NbdMember's transaction rules (docs/transactions.md) on the
// MemberEnv seam: a manual clock and scripted exports (fake_member_env.h).
// Resends, reconnects and their backoff, epochs, fencing, keepalive, the
// give-up budget and the in-flight bound, with failures scripted exactly and
// time moved by the test: no nbdkit, no sockets, no sleeping. The rules'
// real-process counterparts (a real restart, TCP, libnbd) are in
// nbd_member_test.cc.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/fake_member_env.h"
#include "aggregator/member/member_env.h"
#include "aggregator/member/nbd_member.h"
#include "common/log.h"
#include "tests/harness/stderr_capture.h"

namespace dst::member::nbd_member_rules_test {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using testing::FakeExport;
using testing::FakeMemberEnv;
using volume::MemberIo;
using volume::MemberOp;

constexpr char kUri[] = "nbd+unix:///disk0?socket=/run/n1.sock";
constexpr int kPending = -1;  // a result whose done has not run

TransactionOptions FastOptions() {
  TransactionOptions options;
  options.io_timeout = 500ms;
  options.retry_window = 10s;
  options.keepalive = 0ms;
  return options;
}

milliseconds Ms(Clock::duration duration) {
  return std::chrono::duration_cast<milliseconds>(duration);
}

// One member over one scripted export, on a manual clock.
struct Rig {
  explicit Rig(TransactionOptions options = FastOptions(), unsigned connections = 1)
      : env(io), server(env.Export(kUri)), options(options), connections(connections) {
    server.data.assign(server.capabilities.size, 0);
  }

  // Connects as the server start-up does.
  Status Connect() {
    members.push_back(std::make_unique<NbdMember>(io, env, kUri, connections, options));
    return NbdMember::ConnectAll(io, members, 10s);
  }
  void ConnectOrFail() {
    const Status status = Connect();
    REQUIRE_MESSAGE(status.ok(), status.ToString());
  }

  NbdMember& member() { return *members.front(); }

  // Submits an I/O whose done stores its errno in results[index].
  std::shared_ptr<MemberIo> Submit(MemberOp op, uint64_t offset, uint64_t length,
                                   uint8_t* data = nullptr) {
    auto io = std::make_shared<MemberIo>();
    io->op = op;
    io->offset = offset;
    io->length = length;
    io->data = data;
    const size_t index = results.size();
    results.push_back(kPending);
    io->done = [this, index](int err) {
      results[index] = err;
      ++done_count;
    };
    ios.push_back(io);
    member().Submit(io);
    return io;
  }
  // Submits one I/O and moves time on until it is done; returns its errno.
  int Run(MemberOp op, uint64_t offset, uint64_t length, uint8_t* data = nullptr) {
    Submit(op, offset, length, data);
    REQUIRE(env.AdvanceUntil([&] { return results.back() != kPending; }, 120s));
    return results.back();
  }
  bool AllDone() const { return done_count == results.size(); }
  size_t CountOf(int err) const { return std::count(results.begin(), results.end(), err); }
  bool AdvanceUntilAllDone(milliseconds limit) {
    return env.AdvanceUntil([&] { return AllDone(); }, limit);
  }
  bool AdvanceUntilState(NbdMember::State state, milliseconds limit) {
    return env.AdvanceUntil([&] { return member().state() == state; }, limit);
  }
  size_t ArrivalsOf(MemberOp op) const {
    return std::count_if(server.arrivals().begin(), server.arrivals().end(),
                         [op](const FakeExport::Arrival& a) { return a.op == op; });
  }

  // Members go before the environment whose timers they hold, and that
  // before the io_context.
  asio::io_context io;
  FakeMemberEnv env;
  FakeExport& server;
  TransactionOptions options;
  unsigned connections;
  std::vector<std::unique_ptr<NbdMember>> members;
  std::vector<int> results;
  size_t done_count = 0;
  std::vector<std::shared_ptr<MemberIo>> ios;
};

std::vector<uint8_t> Pattern(size_t length, uint8_t seed) {
  std::vector<uint8_t> bytes(length);
  for (size_t i = 0; i < length; ++i)
    bytes[i] = static_cast<uint8_t>(seed + i * 7);
  return bytes;
}

// --- connecting -------------------------------------------------------------

TEST_CASE("ConnectAll gives up on a server that never answers") {
  Rig rig;
  rig.server.reach = FakeExport::Reach::kSilent;
  rig.members.push_back(std::make_unique<NbdMember>(rig.io, rig.env, kUri, 1, rig.options));
  // The start-up bound is real time; 0 ms expires at once, as nothing else
  // can happen: the server never answers.
  const Status status = NbdMember::ConnectAll(rig.io, rig.members, 0ms);
  CHECK(status.err() == ETIMEDOUT);
  CHECK(status.message() == std::string("member ") + kUri + ": connect timed out after 0 ms");
  CHECK(rig.member().state() == NbdMember::State::kConnecting);
}

TEST_CASE("ConnectAll reports the first member that failed, and a failed member fails I/O") {
  Rig rig;
  const std::string refused_uri = "nbd+unix:///disk1?socket=/run/n2.sock";
  rig.env.Export(refused_uri).reach = FakeExport::Reach::kRefused;
  rig.members.push_back(std::make_unique<NbdMember>(rig.io, rig.env, kUri, 1, rig.options));
  rig.members.push_back(std::make_unique<NbdMember>(rig.io, rig.env, refused_uri, 1, rig.options));
  const Status status = NbdMember::ConnectAll(rig.io, rig.members, 10s);
  CHECK(status.err() == ECONNREFUSED);
  CHECK(status.message() == "member " + refused_uri + ": connect: Connection refused");
  CHECK(rig.members[0]->state() == NbdMember::State::kReady);
  CHECK(rig.members[1]->state() == NbdMember::State::kFailed);

  int result = kPending;
  auto io = std::make_shared<MemberIo>();
  io->op = MemberOp::kFlush;
  io->done = [&result](int err) { result = err; };
  rig.members[1]->Submit(io);
  CHECK(result == kPending);  // never from inside Submit()
  rig.env.Settle();
  CHECK(result == EIO);
  CHECK(io->failure.find("member is failed: connect: Connection refused") != std::string::npos);
}

TEST_CASE("a multi-conn member opens its connections; one without multi-conn opens one") {
  SUBCASE("multi-conn") {
    Rig rig(FastOptions(), /*connections=*/4);
    rig.ConnectOrFail();
    CHECK(rig.member().connection_count() == 4);
    CHECK(rig.server.connections() == 4);
    // Only the first connection asks for structured replies (block status).
    REQUIRE(rig.server.attempts().size() == 4);
    CHECK(rig.server.attempts()[0].plan.structured_replies);
    CHECK_FALSE(rig.server.attempts()[3].plan.structured_replies);
  }
  SUBCASE("no multi-conn") {
    Rig rig(FastOptions(), /*connections=*/4);
    rig.server.capabilities.can_multi_conn = false;
    rig.ConnectOrFail();
    CHECK(rig.member().connection_count() == 1);
  }
}

TEST_CASE("requests the export cannot take fail at once with their errno") {
  Rig rig;
  rig.server.capabilities.read_only = true;
  rig.server.capabilities.can_block_status = false;
  rig.server.capabilities.max_request = 64 * 1024;
  rig.ConnectOrFail();
  std::vector<uint8_t> buffer(64 * 1024 + 1);
  rig.Submit(MemberOp::kRead, 0, buffer.size(), buffer.data());
  rig.Submit(MemberOp::kWrite, 0, 4096, buffer.data());
  rig.Submit(MemberOp::kTrim, 0, 4096);
  rig.Submit(MemberOp::kZero, 0, 4096);
  rig.Submit(MemberOp::kBlockStatus, 0, 4096);
  rig.Submit(MemberOp::kRead, 0, 4096, buffer.data());
  CHECK(rig.results == std::vector<int>(6, kPending));  // never from inside Submit()
  rig.env.Settle();
  CHECK(rig.results == std::vector<int>{EINVAL, EROFS, EROFS, EROFS, ENOTSUP, 0});
  CHECK(rig.server.arrivals().size() == 1);  // only the good read reached the export
  CHECK(rig.ios[0]->failure == std::string("member ") + kUri +
                                   ": read of 65537 bytes at member offset 0: Invalid argument");
}

// --- answers ----------------------------------------------------------------

TEST_CASE("error answers are resent until they succeed") {
  Rig rig;
  // Every third write is answered EIO, as a flaky disk would.
  int writes = 0;
  rig.server.answer = [&writes](const MemberIo& io) {
    if (io.op != MemberOp::kWrite) return 0;
    return ++writes % 3 == 1 ? EIO : 0;
  };
  rig.ConnectOrFail();
  for (int i = 0; i < 16; ++i) {
    std::vector<uint8_t> data = Pattern(4096, static_cast<uint8_t>(i));
    REQUIRE(rig.Run(MemberOp::kWrite, i * 4096, data.size(), data.data()) == 0);
    std::vector<uint8_t> back(4096);
    REQUIRE(rig.Run(MemberOp::kRead, i * 4096, back.size(), back.data()) == 0);
    CHECK(back == data);
  }
  const MemberCounters& counters = rig.member().counters();
  CHECK(counters.errors == 8);  // writes 1, 4, 7, ... of 24
  CHECK(counters.resends == counters.errors);
  CHECK(counters.reconnects == 0);
  CHECK(counters.failures == 0);
}

TEST_CASE("a transient error is resent after a backoff delay, on the same connection") {
  Rig rig;
  rig.options.backoff_initial = 100ms;
  int writes = 0;
  rig.server.answer = [&writes](const MemberIo&) { return ++writes <= 3 ? EIO : 0; };
  rig.ConnectOrFail();
  std::vector<uint8_t> data(512, 1);
  const Clock::time_point start = rig.env.now();
  CHECK(rig.Run(MemberOp::kWrite, 0, data.size(), data.data()) == 0);
  const std::vector<FakeExport::Arrival>& arrivals = rig.server.arrivals();
  REQUIRE(arrivals.size() == 4);
  CHECK(arrivals[0].at == start);
  // ResendDelay: 100, 200, 400 ms after the 1st, 2nd and 3rd send (sent by
  // the next tick after that, ticks every 100 ms here).
  CHECK(Ms(arrivals[1].at - arrivals[0].at) >= 100ms);
  CHECK(Ms(arrivals[2].at - arrivals[1].at) >= 200ms);
  CHECK(Ms(arrivals[3].at - arrivals[2].at) >= 400ms);
  CHECK(Ms(arrivals[3].at - arrivals[2].at) < 500ms);
  CHECK(rig.member().counters().reconnects == 0);
  CHECK(rig.server.attempts().size() == 1);
}

TEST_CASE("a flush answered with EIO fails at once") {
  Rig rig;
  rig.server.answer = [](const MemberIo& io) { return io.op == MemberOp::kFlush ? EIO : 0; };
  rig.ConnectOrFail();
  const Clock::time_point start = rig.env.now();
  CHECK(rig.Run(MemberOp::kFlush, 0, 0) == EIO);
  CHECK(rig.env.now() == start);  // no delay, no resend
  CHECK(rig.ArrivalsOf(MemberOp::kFlush) == 1);
  CHECK(rig.member().counters().resends == 0);
  CHECK(rig.ios.back()->failure.find("member answered: Input/output error") != std::string::npos);
}

TEST_CASE("an answer such as ENOSPC fails at once, and the member stays ready") {
  Rig rig;
  rig.server.answer = [](const MemberIo& io) { return io.op == MemberOp::kWrite ? ENOSPC : 0; };
  rig.ConnectOrFail();
  std::vector<uint8_t> data(512, 1);
  CHECK(rig.Run(MemberOp::kWrite, 0, data.size(), data.data()) == ENOSPC);
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 1);
  CHECK(rig.member().state() == NbdMember::State::kReady);
}

TEST_CASE("a resend budget of N retries sends an I/O N+1 times") {
  TransactionOptions options = FastOptions();
  options.retries = 2;
  options.retry_window = 0ms;
  Rig rig(options);
  rig.server.answer = [](const MemberIo& io) { return io.op == MemberOp::kWrite ? EIO : 0; };
  rig.ConnectOrFail();
  std::vector<uint8_t> data(512, 1);
  CHECK(rig.Run(MemberOp::kWrite, 0, data.size(), data.data()) == EIO);
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 3);
  CHECK(rig.member().counters().resends == 2);
  CHECK(rig.member().counters().errors == 3);
  CHECK(rig.member().counters().failures == 1);
  CHECK(rig.ios.back()->failure.find("gave up after 3 attempts in ") != std::string::npos);
  CHECK(rig.ios.back()->failure.find(": member answered: Input/output error") != std::string::npos);
}

// --- deadlines and reconnects -------------------------------------------------

TEST_CASE("an I/O with no answer within io_timeout is resent on a new connection") {
  Rig rig;
  bool first = true;
  rig.server.answer = [&first](const MemberIo&) {
    return std::exchange(first, false) ? FakeExport::kHold : 0;
  };
  rig.ConnectOrFail();
  std::vector<uint8_t> data(512, 1);
  const Clock::time_point start = rig.env.now();
  CHECK(rig.Run(MemberOp::kWrite, 0, data.size(), data.data()) == 0);
  const MemberCounters& counters = rig.member().counters();
  CHECK(counters.timeouts == 1);
  CHECK(counters.reconnects == 1);
  CHECK(counters.resends == 1);
  CHECK(rig.member().epoch() == 2);
  const std::vector<FakeExport::Arrival>& arrivals = rig.server.arrivals();
  REQUIRE(arrivals.size() == 2);
  CHECK(arrivals[1].epoch == 2);
  // Timed out at most a tick (io_timeout / 5) late, resent after
  // backoff_initial.
  CHECK(Ms(arrivals[1].at - start) >= 500ms + 100ms);
  CHECK(Ms(arrivals[1].at - start) <= 500ms + 100ms + 100ms);
}

TEST_CASE("a server restarted gets the in-flight I/O again") {
  Rig rig;
  rig.server.answering = false;
  rig.ConnectOrFail();
  constexpr int kIos = 8;
  std::vector<std::vector<uint8_t>> buffers;
  for (int i = 0; i < kIos; ++i) {
    buffers.push_back(Pattern(4096, static_cast<uint8_t>(i)));
    rig.Submit(MemberOp::kWrite, i * 4096, 4096, buffers.back().data());
  }
  rig.env.Settle();
  REQUIRE(rig.member().in_flight() == kIos);
  REQUIRE(rig.server.held() == kIos);

  // The restarted server has lost nothing it acked, and acked none of these.
  rig.server.Crash();
  rig.server.answering = true;
  REQUIRE(rig.AdvanceUntilAllDone(10s));
  CHECK(rig.CountOf(0) == kIos);
  const MemberCounters& counters = rig.member().counters();
  CHECK(counters.reconnects == 1);
  CHECK(counters.resends == kIos);
  CHECK(counters.failures == 0);
  CHECK(rig.member().state() == NbdMember::State::kReady);
  CHECK(rig.member().epoch() == 2);
  // Resent under the new epoch, in their original order, and they landed.
  const std::vector<FakeExport::Arrival>& arrivals = rig.server.arrivals();
  REQUIRE(arrivals.size() == 2 * kIos);
  for (int i = 0; i < kIos; ++i) {
    CHECK(arrivals[kIos + i].epoch == 2);
    CHECK(arrivals[kIos + i].offset == i * 4096u);
  }
  CHECK(std::equal(buffers[3].begin(), buffers[3].end(), rig.server.data.begin() + 3 * 4096));
}

TEST_CASE("every in-flight I/O fails with EIO when the server is gone for the retry window") {
  TransactionOptions options = FastOptions();
  options.retry_window = 1000ms;
  Rig rig(options, /*connections=*/2);
  rig.server.answering = false;
  rig.ConnectOrFail();
  constexpr int kIos = 32;
  std::vector<uint8_t> buffer(64 * 1024);
  for (int i = 0; i < kIos; ++i)
    rig.Submit(i % 2 == 0 ? MemberOp::kRead : MemberOp::kWrite, i * buffer.size(), buffer.size(),
               buffer.data());
  rig.env.Settle();
  REQUIRE(rig.member().in_flight() == kIos);

  const Clock::time_point start = rig.env.now();
  rig.server.reach = FakeExport::Reach::kRefused;
  rig.server.Crash();
  REQUIRE(rig.AdvanceUntilAllDone(60s));
  // Within the retry window plus one I/O timeout.
  CHECK(Ms(rig.env.now() - start) <= 1500ms);
  CHECK(rig.CountOf(EIO) == kIos);
  CHECK(rig.member().in_flight() == 0);
  CHECK(rig.member().counters().failures == kIos);
  CHECK(rig.ios.front()->failure.find("gave up after ") != std::string::npos);

  // Unreachable for the whole window, the member is failed: new I/O fails
  // at once instead of waiting.
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kFailed, 3s));
  const Clock::time_point flush_start = rig.env.now();
  CHECK(rig.Run(MemberOp::kFlush, 0, 0) == EIO);
  CHECK(rig.env.now() == flush_start);
  CHECK(rig.ios.back()->failure.find("member is failed") != std::string::npos);

  // Probed every backoff_max: it recovers when the export is back.
  rig.server.reach = FakeExport::Reach::kUp;
  rig.server.answering = true;
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReady, 6s));
  CHECK(rig.Run(MemberOp::kFlush, 0, 0) == 0);
}

TEST_CASE("reconnect attempts back off, doubling up to backoff_max, each under a new epoch") {
  TransactionOptions options = FastOptions();
  options.backoff_initial = 100ms;
  options.backoff_max = 1000ms;
  options.retry_window = 0ms;  // keep trying
  Rig rig(options);
  rig.ConnectOrFail();
  const Clock::time_point lost_at = rig.env.now();
  rig.server.reach = FakeExport::Reach::kRefused;
  rig.server.Crash();
  const auto& attempts = rig.server.attempts();
  REQUIRE(rig.env.AdvanceUntil([&] { return attempts.size() == 9; }, 60s));

  // The first tick (io_timeout / 5 = 100 ms) finds the dead connection;
  // the first attempt follows backoff_initial later.
  CHECK(Ms(attempts[1].at - lost_at) == 200ms);
  std::vector<milliseconds> gaps;
  for (size_t i = 2; i < attempts.size(); ++i)
    gaps.push_back(Ms(attempts[i].at - attempts[i - 1].at));
  CHECK(gaps == std::vector<milliseconds>{200ms, 400ms, 800ms, 1000ms, 1000ms, 1000ms, 1000ms});

  // Epoch 1 at start (a probe), then one more for every attempt.
  CHECK(attempts[0].plan.epoch == 1);
  CHECK(attempts[0].plan.fencing == ConnectPlan::Fencing::kProbe);
  for (size_t i = 1; i < attempts.size(); ++i) {
    CHECK(attempts[i].plan.epoch == i + 1);
    CHECK(attempts[i].plan.fencing == ConnectPlan::Fencing::kFence);
    CHECK(attempts[i].plan.session == attempts[0].plan.session);
  }
  CHECK(rig.member().counters().connect_failures == 8);
  CHECK(rig.member().state() == NbdMember::State::kReconnecting);

  // Back: the attempt that connects has the next epoch, and so do the
  // extra connections and every I/O sent on them.
  rig.server.reach = FakeExport::Reach::kUp;
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReady, 2s));
  CHECK(rig.member().epoch() == 10);
  CHECK(rig.member().counters().reconnects == 1);
  CHECK(rig.Run(MemberOp::kFlush, 0, 0) == 0);
  CHECK(rig.server.arrivals().back().epoch == 10);
}

TEST_CASE("a member is failed after retries reconnect attempts in a row") {
  TransactionOptions options = FastOptions();
  options.retries = 3;
  options.retry_window = 0ms;
  Rig rig(options);
  rig.server.answering = false;
  rig.ConnectOrFail();
  std::vector<uint8_t> data(512, 1);
  rig.Submit(MemberOp::kWrite, 0, data.size(), data.data());
  rig.env.Settle();
  rig.server.reach = FakeExport::Reach::kRefused;
  rig.server.Crash();
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kFailed, 60s));
  CHECK(rig.server.attempts().size() == 1 + 4);
  CHECK(rig.results.back() == EIO);
  CHECK(rig.ios.back()->failure.find("reconnect: connect: Connection refused") !=
        std::string::npos);
}

TEST_CASE("a connect attempt with no answer within io_timeout fails and is retried") {
  Rig rig;
  rig.ConnectOrFail();
  rig.server.reach = FakeExport::Reach::kSilent;
  rig.server.Crash();
  const auto& attempts = rig.server.attempts();
  REQUIRE(rig.env.AdvanceUntil([&] { return attempts.size() == 3; }, 10s));
  // io_timeout to give up on the attempt, then the doubled backoff.
  CHECK(Ms(attempts[2].at - attempts[1].at) == 500ms + 200ms);
  CHECK(rig.member().counters().connect_failures == 1);
  rig.server.reach = FakeExport::Reach::kUp;
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReady, 5s));
}

TEST_CASE("a server that comes back as another export is refused") {
  Rig rig;
  rig.ConnectOrFail();
  rig.server.capabilities.size = 512 * 1024;
  rig.server.Crash();
  // The next I/O meets the dead connection, and the reconnect finds 512 KiB.
  std::vector<uint8_t> data(4096, 1);
  CHECK(rig.Run(MemberOp::kWrite, 0, data.size(), data.data()) == EIO);
  CHECK(rig.member().state() == NbdMember::State::kFailed);
  CHECK(rig.ios.back()->failure.find("refused: came back with size 524288, was 1048576") !=
        std::string::npos);
  CHECK(rig.member().counters().connect_failures == 1);
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 0);

  SUBCASE("other flags") {
    rig.server.capabilities.size = 1 << 20;
    rig.server.capabilities.can_trim = false;
    rig.env.Advance(rig.options.backoff_max);
    CHECK(rig.member().state() == NbdMember::State::kFailed);
    CHECK(rig.member().counters().connect_failures == 2);
  }
  SUBCASE("the right export comes back") {
    rig.server.capabilities.size = 1 << 20;
    REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReady, rig.options.backoff_max + 1s));
    CHECK(rig.Run(MemberOp::kWrite, 0, data.size(), data.data()) == 0);
  }
}

// --- fencing ----------------------------------------------------------------

TEST_CASE("fencing modes") {
  SUBCASE("auto fences a member that can") {
    Rig rig;
    rig.ConnectOrFail();
    CHECK(rig.member().fenced());
    CHECK(rig.server.attempts()[0].plan.session.size() == 32);
  }
  SUBCASE("auto uses a member that cannot, unfenced") {
    Rig rig;
    rig.server.can_fence = false;
    rig.ConnectOrFail();
    CHECK_FALSE(rig.member().fenced());
    CHECK(rig.member().state() == NbdMember::State::kReady);
  }
  SUBCASE("require refuses a member that cannot") {
    TransactionOptions options = FastOptions();
    options.fencing = FencingMode::kRequire;
    Rig rig(options);
    rig.server.can_fence = false;
    const Status status = rig.Connect();
    CHECK(status.err() == EPROTO);
    CHECK(status.message() ==
          std::string("member ") + kUri +
              ": cannot fence (not a dst export node), and fencing is required");
    CHECK(rig.member().state() == NbdMember::State::kFailed);
  }
  SUBCASE("require names a refused fenced name (an older epoch) as such") {
    TransactionOptions options = FastOptions();
    options.fencing = FencingMode::kRequire;
    Rig rig(options);
    rig.server.refuse_fence = ENOENT;
    const Status status = rig.Connect();
    CHECK(status.err() == EPROTO);
    CHECK(status.message() == std::string("member ") + kUri +
                                  ": the export refused the fenced name (No such file or "
                                  "directory): an older fencing epoch of this member's session, "
                                  "a read-only connection, or not a dst export node; fencing is "
                                  "required");
    CHECK(rig.member().state() == NbdMember::State::kFailed);
  }
  SUBCASE("off never asks") {
    TransactionOptions options = FastOptions();
    options.fencing = FencingMode::kOff;
    Rig rig(options);
    rig.ConnectOrFail();
    CHECK_FALSE(rig.member().fenced());
    CHECK(rig.server.attempts()[0].plan.fencing == ConnectPlan::Fencing::kNone);
  }
}

TEST_CASE("a fenced member that comes back without fencing gets no I/O") {
  TransactionOptions options = FastOptions();
  options.retry_window = 2s;
  Rig rig(options);
  rig.server.answering = false;
  rig.ConnectOrFail();
  REQUIRE(rig.member().fenced());
  std::vector<uint8_t> data(4096, 1);
  for (int i = 0; i < 4; ++i)
    rig.Submit(MemberOp::kWrite, i * 4096, data.size(), data.data());
  rig.env.Settle();
  // Back as a server that accepts any name but does not fence.
  rig.server.can_fence = false;
  rig.server.answering = true;
  rig.server.Crash();
  REQUIRE(rig.AdvanceUntilAllDone(10s));
  CHECK(rig.CountOf(EIO) == 4);
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 4);  // the first sends only
  for (const FakeExport::Arrival& arrival : rig.server.arrivals())
    CHECK(arrival.epoch == 1);
  CHECK(rig.ios.back()->failure.find("did not confirm fencing") != std::string::npos);
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kFailed, 5s));
  // Every attempt asked for fencing.
  for (size_t i = 1; i < rig.server.attempts().size(); ++i)
    CHECK(rig.server.attempts()[i].plan.fencing == ConnectPlan::Fencing::kFence);
}

TEST_CASE("an unfenced member reconnects unfenced") {
  Rig rig;
  rig.server.can_fence = false;
  rig.ConnectOrFail();
  rig.server.Crash();
  CHECK(rig.Run(MemberOp::kFlush, 0, 0) == 0);
  REQUIRE(rig.server.attempts().size() == 2);
  CHECK(rig.server.attempts()[1].plan.fencing == ConnectPlan::Fencing::kNone);
  CHECK(rig.member().counters().reconnects == 1);
}

// --- keepalive ----------------------------------------------------------------

TEST_CASE("keepalive pings find a server that stopped answering while idle") {
  TransactionOptions options = FastOptions();
  options.keepalive = 200ms;
  options.io_timeout = 300ms;
  Rig rig(options);
  rig.ConnectOrFail();
  rig.env.Advance(300ms);
  CHECK(rig.member().counters().pings == 1);
  CHECK(rig.ArrivalsOf(MemberOp::kRead) == 1);
  CHECK(rig.member().state() == NbdMember::State::kReady);

  rig.server.answering = false;  // hung, as under SIGSTOP
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReconnecting, 3s));
  CHECK(rig.member().counters().timeouts == 1);
  CHECK(rig.member().counters().ios == 0);  // no client I/O was involved
  rig.server.answering = true;
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReady, 5s));
}

TEST_CASE("no keepalive pings with keepalive 0, and none while I/O is in flight") {
  SUBCASE("keepalive 0") {
    Rig rig;  // FastOptions: keepalive 0
    rig.ConnectOrFail();
    rig.env.Advance(120s);
    CHECK(rig.member().counters().pings == 0);
    CHECK(rig.server.arrivals().empty());
    CHECK(rig.member().state() == NbdMember::State::kReady);
  }
  SUBCASE("busy") {
    TransactionOptions options = FastOptions();
    options.keepalive = 200ms;
    options.io_timeout = 10s;
    Rig rig(options);
    rig.server.answering = false;
    rig.ConnectOrFail();
    rig.Submit(MemberOp::kFlush, 0, 0);
    rig.env.Advance(5s);
    CHECK(rig.member().counters().pings == 0);
    rig.server.AnswerHeld();
    rig.env.Settle();
    CHECK(rig.results.back() == 0);
  }
}

// --- the in-flight bound ------------------------------------------------------

TEST_CASE("70,000 queued I/Os: never more than the bound in flight, no timeouts, all done") {
  TransactionOptions options = FastOptions();
  options.io_timeout = 5s;
  options.retry_window = 60s;
  options.max_in_flight = 256;
  Rig rig(options, /*connections=*/2);
  rig.server.answering = false;
  rig.ConnectOrFail();
  constexpr uint64_t kIos = 70'000;
  // Pieces of one huge trim, as a striped volume makes them.
  for (uint64_t i = 0; i < kIos; ++i)
    rig.Submit(MemberOp::kTrim, i * 512, 512);
  rig.env.Settle();
  CHECK(rig.member().in_flight() == 2 * 256);
  CHECK(rig.member().waiting() == kIos - 2 * 256);

  // The member answers what it holds every 50 ms: 137 rounds, 6.9 s, longer
  // than io_timeout; each I/O is answered 50 ms after it was sent.
  const Clock::time_point start = rig.env.now();
  int rounds = 0;
  for (; rounds < 1000 && !rig.AllDone(); ++rounds) {
    REQUIRE(rig.member().in_flight() <= 2 * 256);
    rig.env.Advance(50ms);
    rig.server.AnswerHeld();
    rig.env.Settle();
  }
  CHECK(rig.AllDone());
  CHECK(rounds == 137);
  CHECK(rig.env.now() - start > options.io_timeout);
  CHECK(rig.CountOf(0) == kIos);
  CHECK(rig.server.max_in_flight_seen() == 256);
  const MemberCounters& counters = rig.member().counters();
  CHECK(counters.timeouts == 0);
  CHECK(counters.reconnects == 0);
  CHECK(counters.resends == 0);
  // Sent in the order they were submitted.
  const std::vector<FakeExport::Arrival>& arrivals = rig.server.arrivals();
  REQUIRE(arrivals.size() == kIos);
  bool in_order = true;
  for (uint64_t i = 0; i < kIos; ++i)
    in_order = in_order && arrivals[i].offset == i * 512;
  CHECK(in_order);
}

TEST_CASE("a queued I/O's deadline starts when it is sent") {
  TransactionOptions options = FastOptions();
  options.io_timeout = 1s;
  options.max_in_flight = 1;
  Rig rig(options);
  rig.server.answering = false;
  rig.ConnectOrFail();
  for (int i = 0; i < 3; ++i)
    rig.Submit(MemberOp::kTrim, i * 512, 512);
  rig.env.Settle();
  CHECK(rig.server.held() == 1);
  // Each is answered 900 ms after it was sent, the last 2.7 s after it was
  // submitted: none times out.
  for (int i = 0; i < 3; ++i) {
    rig.env.Advance(900ms);
    CHECK(rig.server.held() == 1);
    rig.server.AnswerHeld();
    rig.env.Settle();
    CHECK(rig.results[i] == 0);
  }
  CHECK(rig.member().counters().timeouts == 0);
  CHECK(rig.member().counters().reconnects == 0);
}

TEST_CASE("a queued I/O's budget counts from its submission") {
  TransactionOptions options = FastOptions();
  options.io_timeout = 5s;
  options.retry_window = 1s;
  options.max_in_flight = 1;
  Rig rig(options);
  rig.server.answering = false;
  rig.ConnectOrFail();
  rig.Submit(MemberOp::kTrim, 0, 512);    // sent
  rig.Submit(MemberOp::kTrim, 512, 512);  // waits for room
  rig.env.Advance(1500ms);
  // The client's request has waited retry_window: the one never sent gives
  // up; the one in flight has its deadline still ahead.
  CHECK(rig.results[0] == kPending);
  CHECK(rig.results[1] == EIO);
  CHECK(rig.ios[1]->failure.find("gave up after 0 attempts in 1.") != std::string::npos);
  rig.server.AnswerHeld();
  rig.env.Settle();
  CHECK(rig.results[0] == 0);
  CHECK(rig.ArrivalsOf(MemberOp::kTrim) == 1);
}

TEST_CASE("a reconnect resends in bounded batches, the lost I/Os first, in order") {
  TransactionOptions options = FastOptions();
  options.max_in_flight = 64;
  Rig rig(options);
  rig.server.answering = false;
  rig.ConnectOrFail();
  constexpr uint64_t kIos = 5'000;
  for (uint64_t i = 0; i < kIos; ++i)
    rig.Submit(MemberOp::kZero, i * 512, 512);
  rig.env.Settle();
  REQUIRE(rig.server.held() == 64);
  rig.server.Crash();
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReconnecting, 1s));
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReady, 1s));
  rig.env.Settle();
  CHECK(rig.server.held() == 64);  // not all 5,000 at once
  CHECK(rig.member().in_flight() == 64);

  int rounds = 0;
  for (; rounds < 1000 && !rig.AllDone(); ++rounds) {
    rig.env.Advance(10ms);
    rig.server.AnswerHeld();
    rig.env.Settle();
  }
  CHECK(rig.CountOf(0) == kIos);
  CHECK(rig.server.max_in_flight_seen() == 64);
  CHECK(rig.member().counters().resends == 64);
  CHECK(rig.member().counters().timeouts == 0);
  // After the 64 lost with the connection, everything in submission order
  // under the new epoch: the lost ones first.
  const std::vector<FakeExport::Arrival>& arrivals = rig.server.arrivals();
  REQUIRE(arrivals.size() == kIos + 64);
  bool in_order = true;
  for (uint64_t i = 0; i < kIos; ++i)
    in_order = in_order && arrivals[64 + i].offset == i * 512 && arrivals[64 + i].epoch == 2;
  CHECK(in_order);
}

TEST_CASE("new I/O never overtakes I/O waiting for room") {
  TransactionOptions options = FastOptions();
  options.max_in_flight = 2;
  Rig rig(options);
  rig.server.answering = false;
  rig.ConnectOrFail();
  for (int i = 0; i < 4; ++i)
    rig.Submit(MemberOp::kTrim, i * 512, 512);
  rig.env.Settle();
  rig.server.AnswerHeld(0, 1);  // room for one
  rig.Submit(MemberOp::kTrim, 4 * 512, 512);
  rig.env.Settle();
  rig.server.AnswerHeld();
  rig.server.AnswerHeld();
  rig.env.Settle();
  rig.server.AnswerHeld();
  rig.env.Settle();
  REQUIRE(rig.AllDone());
  std::vector<uint64_t> offsets;
  for (const FakeExport::Arrival& arrival : rig.server.arrivals())
    offsets.push_back(arrival.offset / 512);
  CHECK(offsets == std::vector<uint64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("a member with a maximum request under 64 KiB is used, with one warning") {
  Rig rig;
  rig.server.capabilities.min_block = 512;
  rig.server.capabilities.preferred_block = 512;
  rig.server.capabilities.max_request = 512;
  std::string log;
  {
    test::StderrCapture capture;
    rig.ConnectOrFail();
    log = capture.Text();
  }
  CHECK_MESSAGE(log.find(std::string("warning: member ") + kUri +
                         ": maximum request size is 512 bytes (under 64 KiB): a large client "
                         "request becomes many member I/Os, at most 256 in flight per "
                         "connection\n") != std::string::npos,
                log);
  std::vector<uint8_t> buffer(512);
  CHECK(rig.Run(MemberOp::kRead, 0, 512, buffer.data()) == 0);
  CHECK(rig.Run(MemberOp::kRead, 0, 513, buffer.data()) == EINVAL);

  Rig normal;
  normal.server.capabilities.max_request = 64 * 1024;
  test::StderrCapture capture;
  normal.ConnectOrFail();
  CHECK_MESSAGE(capture.Text().find("maximum request size") == std::string::npos, capture.Text());
}

// --- abandoning ----------------------------------------------------------------

TEST_CASE("an abandoned member fails everything at once and never reconnects") {
  TransactionOptions options = FastOptions();
  options.max_in_flight = 2;
  Rig rig(options);
  rig.ConnectOrFail();
  std::vector<uint8_t> buffer(4096);
  // Two answered, two in flight (held by the server), two queued for room,
  // one in its resend delay after a transient error.
  CHECK(rig.Run(MemberOp::kWrite, 0, buffer.size(), buffer.data()) == 0);
  int transient = 1;
  rig.server.answer = [&](const MemberIo& io) {
    if (io.op == MemberOp::kTrim && transient > 0) {
      --transient;
      return EIO;
    }
    return FakeExport::kHold;
  };
  rig.Submit(MemberOp::kTrim, 0, 512);
  rig.env.Settle();
  REQUIRE(rig.member().waiting() == 1);  // waiting for its resend delay
  rig.Submit(MemberOp::kRead, 0, buffer.size(), buffer.data());
  rig.Submit(MemberOp::kWrite, 4096, buffer.size(), buffer.data());
  rig.Submit(MemberOp::kFlush, 0, 0);
  rig.Submit(MemberOp::kRead, 8192, buffer.size(), buffer.data());
  rig.env.Settle();
  REQUIRE(rig.member().in_flight() == 2);
  REQUIRE(rig.member().waiting() == 3);
  const size_t attempts = rig.server.attempts().size();
  const Clock::time_point start = rig.env.now();

  std::string log;
  {
    test::StderrCapture capture;
    rig.member().Abandon("demoted: write failed");
    log = capture.Text();
  }
  CHECK_MESSAGE(log.find(std::string("warning: member ") + kUri +
                         " abandoned: demoted: write failed\n") != std::string::npos,
                log);
  CHECK(std::count(log.begin(), log.end(), '\n') == 1);  // that line only
  CHECK(rig.member().state() == NbdMember::State::kFailed);
  CHECK(rig.member().abandoned());
  CHECK(rig.member().in_flight() == 0);
  CHECK(rig.member().waiting() == 0);
  CHECK(rig.member().connection_count() == 0);
  CHECK(rig.server.connections() == 0);
  // Not from inside Abandon(): on the next turn of the loop, no time passing.
  CHECK(rig.done_count == 1);
  rig.env.Settle();
  CHECK(rig.env.now() == start);
  REQUIRE(rig.AllDone());
  CHECK(rig.results == std::vector<int>{0, EIO, EIO, EIO, EIO, EIO});
  for (size_t i = 1; i < rig.ios.size(); ++i) {
    CAPTURE(i);
    CHECK(rig.ios[i]->failure.find("abandoned: demoted: write failed") != std::string::npos);
  }

  // Later I/O fails too, posted, at once.
  rig.Submit(MemberOp::kRead, 0, buffer.size(), buffer.data());
  CHECK(rig.results.back() == kPending);
  rig.env.Settle();
  CHECK(rig.results.back() == EIO);
  CHECK(rig.ios.back()->failure.find("abandoned") != std::string::npos);
  CHECK(rig.member().counters().failures == 6);

  // No reconnect ever, whatever the server does, and nothing more arrives.
  const size_t arrivals = rig.server.arrivals().size();
  rig.server.answer = nullptr;
  rig.env.Advance(60s);
  CHECK(rig.server.attempts().size() == attempts);
  CHECK(rig.server.arrivals().size() == arrivals);
  CHECK(rig.member().state() == NbdMember::State::kFailed);
  CHECK(rig.member().counters().reconnects == 0);
  // A second Abandon says nothing more.
  test::StderrCapture capture;
  rig.member().Abandon("again");
  CHECK(capture.Text().empty());
}

TEST_CASE("a member abandoned while reconnecting stops trying at once") {
  TransactionOptions options = FastOptions();
  options.backoff_initial = 100ms;
  options.retry_window = 0ms;  // would keep trying for ever
  Rig rig(options);
  rig.ConnectOrFail();
  rig.server.answering = false;
  std::vector<uint8_t> data = Pattern(512, 1);
  rig.Submit(MemberOp::kWrite, 0, data.size(), data.data());
  rig.env.Settle();
  rig.server.reach = FakeExport::Reach::kRefused;
  rig.server.Crash();
  REQUIRE(rig.AdvanceUntilState(NbdMember::State::kReconnecting, 1s));
  rig.env.Advance(300ms);
  REQUIRE(rig.results[0] == kPending);  // waiting for the member to come back
  const size_t attempts = rig.server.attempts().size();
  {
    test::StderrCapture capture;
    rig.member().Abandon("demoted");
  }
  rig.env.Settle();
  CHECK(rig.results[0] == EIO);
  rig.server.reach = FakeExport::Reach::kUp;
  rig.server.answering = true;
  rig.env.Advance(30s);
  CHECK(rig.server.attempts().size() == attempts);
  CHECK(rig.member().state() == NbdMember::State::kFailed);
  CHECK(rig.Run(MemberOp::kFlush, 0, 0) == EIO);
}

TEST_CASE("a member abandoned while it first connects reports the failure to its connect") {
  Rig rig;
  rig.server.reach = FakeExport::Reach::kUp;
  rig.members.push_back(std::make_unique<NbdMember>(rig.io, rig.env, kUri, 1, rig.options));
  Status connected = Status::Ok();
  bool called = false;
  rig.member().AsyncConnect([&](Status status) {
    connected = std::move(status);
    called = true;
  });
  rig.Submit(MemberOp::kFlush, 0, 0);  // waits for the connection
  {
    test::StderrCapture capture;
    rig.member().Abandon("demoted");
  }
  rig.env.Settle();
  CHECK(rig.results[0] == EIO);
  REQUIRE(called);
  CHECK(connected.err() == EIO);
  CHECK(connected.message().find("abandoned: demoted") != std::string::npos);
  CHECK(rig.member().state() == NbdMember::State::kFailed);
  CHECK(rig.member().connection_count() == 0);
  rig.env.Advance(10s);
  CHECK(rig.server.attempts().size() == 1);
}

// --- lifetime -----------------------------------------------------------------

TEST_CASE("destroying a member completes its I/Os with ENOTCONN") {
  Rig rig;
  rig.options.max_in_flight = 1;
  rig.server.answering = false;
  rig.ConnectOrFail();
  rig.Submit(MemberOp::kFlush, 0, 0);  // in flight
  rig.Submit(MemberOp::kFlush, 0, 0);  // waiting
  rig.env.Settle();
  rig.members.clear();
  CHECK(rig.results == std::vector<int>{kPending, kPending});
  rig.env.Settle();
  CHECK(rig.results == std::vector<int>{ENOTCONN, ENOTCONN});
}

// --- the default environment and the session in logs --------------------------

// Two timers due in the same pass, each cancelling, restarting or destroying
// the other when it fires: the expiry of the second may already be queued,
// and it must not run (under ASan, a destroyed timer's handler touching it
// would be reported).
TEST_CASE("a default timer never fires after it was cancelled, restarted or destroyed") {
  enum class Action { kCancel, kRestart, kDestroy };
  for (const Action action : {Action::kCancel, Action::kRestart, Action::kDestroy}) {
    CAPTURE(static_cast<int>(action));
    asio::io_context io;
    DefaultMemberEnv env(io);
    std::unique_ptr<MemberTimer> timers[2] = {env.NewTimer(), env.NewTimer()};
    int fired = 0;
    for (int i = 0; i < 2; ++i) {
      timers[i]->Start(0ms, [&, other = 1 - i] {
        ++fired;
        if (action == Action::kCancel) timers[other]->Cancel();
        if (action == Action::kRestart) timers[other]->Start(1h, [&fired] { fired += 100; });
        if (action == Action::kDestroy) timers[other].reset();
      });
    }
    REQUIRE(io.run_one() == 1);
    io.poll();  // whatever was queued with it
    CHECK(fired == 1);
  }
}

TEST_CASE("RedactSession keeps sessions out of messages") {
  const std::string session = "0123456789abcdef0123456789abcdef";
  CHECK(RedactSession("server refused export 'disk0@dst-fence:" + session +
                          ":7': handshake: server has no export named 'disk0@dst-fence:" + session +
                          ":7': No such file or directory",
                      session) ==
        "server refused export 'disk0@dst-fence:...:7': handshake: server has no export named "
        "'disk0@dst-fence:...:7': No such file or directory");
  CHECK(RedactSession("connect: Connection refused", session) == "connect: Connection refused");
  CHECK(RedactSession(session, session) == "...");
  CHECK(RedactSession("no session here", "") == "no session here");
}

TEST_CASE("a member of a redundant volume fenced by a newer owner stops writing, keeps reading") {
  TransactionOptions options = FastOptions();
  options.fence_session = "0123456789abcdef0123456789abcdef";
  options.fence_epoch_base = uint64_t{3} << 32;
  Rig rig(options);
  rig.ConnectOrFail();
  REQUIRE(rig.server.attempts().back().plan.session == options.fence_session);
  CHECK(rig.server.attempts().back().plan.epoch == (uint64_t{3} << 32) + 1);
  CHECK(rig.member().epoch() == (uint64_t{3} << 32) + 1);
  int superseded_calls = 0;
  rig.member().OnSuperseded([&] {
    ++superseded_calls;
    CHECK(rig.member().superseded());
  });
  // The plugin refuses the writes of an older epoch with ESHUTDOWN.
  rig.server.answer = [](const MemberIo& io) { return io.op == MemberOp::kRead ? 0 : ESHUTDOWN; };
  std::vector<uint8_t> block = Pattern(4096, 7);
  test::StderrCapture log;
  CHECK(rig.Run(MemberOp::kWrite, 0, 4096, block.data()) == EROFS);
  CHECK(superseded_calls == 1);
  CHECK(log.Text().find("fenced by a newer owner: no more writes") != std::string::npos);
  CHECK(rig.ios.back()->failure.find("fenced by a newer owner") != std::string::npos);
  // No resend, no reconnect: one write reached the export, on the first connection.
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 1);
  CHECK(rig.server.attempts().size() == 1);
  // Later writes, trims and zeroes fail at once; reads go on.
  CHECK(rig.Run(MemberOp::kWrite, 4096, 4096, block.data()) == EROFS);
  CHECK(rig.Run(MemberOp::kTrim, 0, 4096) == EROFS);
  CHECK(rig.Run(MemberOp::kZero, 0, 4096) == EROFS);
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 1);
  CHECK(rig.ArrivalsOf(MemberOp::kTrim) == 0);
  std::vector<uint8_t> back(4096);
  CHECK(rig.Run(MemberOp::kRead, 0, 4096, back.data()) == 0);
  CHECK(superseded_calls == 1);
  CHECK(rig.member().state() == NbdMember::State::kReady);
}

TransactionOptions RedundantOptions() {
  TransactionOptions options = FastOptions();
  options.fence_session = "0123456789abcdef0123456789abcdef";
  options.fence_epoch_base = uint64_t{3} << 32;
  return options;
}

// nbdkit stopped with SIGTERM answers what is in flight with ESHUTDOWN, as a
// fence does; the read that follows tells them apart.
TEST_CASE(
    "a stopping export node (ESHUTDOWN, then a failed read) is reconnected, not a new owner") {
  Rig rig(RedundantOptions());
  rig.ConnectOrFail();
  int superseded_calls = 0;
  rig.member().OnSuperseded([&] { ++superseded_calls; });
  bool stopping = true;
  rig.server.answer = [&](const MemberIo& io) {
    if (!stopping) return 0;
    if (io.op == MemberOp::kRead) stopping = false;  // the probe; the node comes back
    return ESHUTDOWN;
  };
  std::vector<uint8_t> block = Pattern(4096, 9);
  test::StderrCapture log;
  CHECK(rig.Run(MemberOp::kWrite, 0, 4096, block.data()) == 0);
  CHECK_FALSE(rig.member().superseded());
  CHECK(superseded_calls == 0);
  CHECK(log.Text().find("then a read failed") != std::string::npos);
  CHECK(log.Text().find("the export node is stopping") != std::string::npos);
  CHECK(log.Text().find("fenced by a newer owner") == std::string::npos);
  // The write was resent on a new connection, under the next epoch.
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 2);
  REQUIRE(rig.server.attempts().size() == 2);
  CHECK(rig.server.attempts().back().plan.epoch == (uint64_t{3} << 32) + 2);
  CHECK(std::equal(block.begin(), block.end(), rig.server.data.begin()));
}

TEST_CASE("a fence probe lost with its connection resends the held writes after a reconnect") {
  Rig rig(RedundantOptions());
  rig.ConnectOrFail();
  bool stopping = true;
  rig.server.answer = [&](const MemberIo& io) {
    if (!stopping) return 0;
    return io.op == MemberOp::kRead ? FakeExport::kHold : ESHUTDOWN;
  };
  std::vector<uint8_t> first = Pattern(4096, 10);
  std::vector<uint8_t> second = Pattern(4096, 11);
  rig.Submit(MemberOp::kWrite, 0, 4096, first.data());
  rig.Submit(MemberOp::kWrite, 4096, 4096, second.data());
  // Both writes answered ESHUTDOWN and held; one probe waits for its answer.
  REQUIRE(rig.env.AdvanceUntil([&] { return rig.server.held() == 1; }, 10s));
  CHECK(rig.ArrivalsOf(MemberOp::kRead) == 1);
  CHECK(rig.done_count == 0);
  stopping = false;
  rig.server.Crash();  // nbdkit closes the connection as it exits
  REQUIRE(rig.AdvanceUntilAllDone(30s));
  CHECK(rig.results == std::vector<int>{0, 0});
  CHECK_FALSE(rig.member().superseded());
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 4);
  CHECK(std::equal(first.begin(), first.end(), rig.server.data.begin()));
  CHECK(std::equal(second.begin(), second.end(), rig.server.data.begin() + 4096));
}

TEST_CASE("one fence probe answers for every write refused meanwhile") {
  Rig rig(RedundantOptions());
  rig.ConnectOrFail();
  int superseded_calls = 0;
  rig.member().OnSuperseded([&] { ++superseded_calls; });
  rig.server.answer = [](const MemberIo& io) { return io.op == MemberOp::kRead ? 0 : ESHUTDOWN; };
  std::vector<uint8_t> block = Pattern(4096, 12);
  for (int i = 0; i < 4; ++i)
    rig.Submit(MemberOp::kWrite, uint64_t(i) * 4096, 4096, block.data());
  REQUIRE(rig.AdvanceUntilAllDone(10s));
  CHECK(rig.CountOf(EROFS) == 4);
  CHECK(superseded_calls == 1);
  CHECK(rig.ArrivalsOf(MemberOp::kWrite) == 4);
  CHECK(rig.ArrivalsOf(MemberOp::kRead) == 1);  // the one probe
  CHECK(rig.server.attempts().size() == 1);
}

TEST_CASE("without an ownership epoch, ESHUTDOWN to a write still means reconnect and resend") {
  Rig rig;
  rig.ConnectOrFail();
  int answers = 0;
  rig.server.answer = [&](const MemberIo& io) {
    return io.op == MemberOp::kWrite && answers++ == 0 ? ESHUTDOWN : 0;
  };
  std::vector<uint8_t> block = Pattern(4096, 8);
  CHECK(rig.Run(MemberOp::kWrite, 0, 4096, block.data()) == 0);
  CHECK_FALSE(rig.member().superseded());
  CHECK(rig.server.attempts().size() == 2);  // a reconnect, under epoch 2
  CHECK(rig.server.attempts().back().plan.epoch == 2);
}

}  // namespace
}  // namespace dst::member::nbd_member_rules_test
