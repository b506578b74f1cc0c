#include "aggregator/member/transaction_policy.h"

#include <doctest/doctest.h>

#include <cerrno>

namespace dst::member::transaction_policy_test {
namespace {

using std::chrono::milliseconds;
using volume::MemberOp;

TEST_CASE("lost connections and deadlines reconnect; transient answers resend") {
  for (int err : {ETIMEDOUT, ENOTCONN, ECONNRESET, ECONNREFUSED, EPIPE, ESHUTDOWN}) {
    CAPTURE(err);
    CHECK(ClassifyError(MemberOp::kWrite, err) == ErrorAction::kReconnect);
    CHECK(ClassifyError(MemberOp::kFlush, err) == ErrorAction::kReconnect);
  }
  for (int err : {EIO, ENOMEM, EAGAIN}) {
    CAPTURE(err);
    CHECK(ClassifyError(MemberOp::kWrite, err) == ErrorAction::kResend);
    CHECK(ClassifyError(MemberOp::kRead, err) == ErrorAction::kResend);
  }
}

TEST_CASE("a flush answered with EIO is final: its dirty data may be gone") {
  CHECK(ClassifyError(MemberOp::kFlush, EIO) == ErrorAction::kFail);
  CHECK(ClassifyError(MemberOp::kFlush, ENOMEM) == ErrorAction::kResend);
}

TEST_CASE("answers that a resend cannot change are final") {
  for (int err : {EINVAL, EPERM, EROFS, ENOSPC, ENOTSUP, EOVERFLOW, EACCES}) {
    CAPTURE(err);
    CHECK(ClassifyError(MemberOp::kWrite, err) == ErrorAction::kFail);
  }
}

TEST_CASE("the resend budget: count, window, or both") {
  const Clock::time_point start{};
  SendHistory history{start, 1};
  TransactionOptions options;

  SUBCASE("window only (the default)") {
    options.retries = 0;
    options.retry_window = milliseconds(1000);
    history.sends = 1000;
    CHECK(MaySendAgain(options, history, start + milliseconds(999)));
    CHECK_FALSE(MaySendAgain(options, history, start + milliseconds(1000)));
  }
  SUBCASE("count only") {
    options.retries = 3;
    options.retry_window = milliseconds(0);
    history.sends = 3;  // the first send and two resends
    CHECK(MaySendAgain(options, history, start + std::chrono::hours(100)));
    history.sends = 4;
    CHECK_FALSE(MaySendAgain(options, history, start));
  }
  SUBCASE("both: whichever is spent first") {
    options.retries = 3;
    options.retry_window = milliseconds(1000);
    history.sends = 2;
    CHECK_FALSE(MaySendAgain(options, history, start + milliseconds(1500)));
    history.sends = 4;
    CHECK_FALSE(MaySendAgain(options, history, start));
  }
  SUBCASE("neither: forever") {
    options.retries = 0;
    options.retry_window = milliseconds(0);
    history.sends = 1000000;
    CHECK(MaySendAgain(options, history, start + std::chrono::hours(1000)));
  }
}

TEST_CASE("reconnect backoff doubles from the initial delay up to the maximum") {
  TransactionOptions options;  // 100 ms to 5 s
  CHECK(ReconnectDelay(options, 0) == milliseconds(100));
  CHECK(ReconnectDelay(options, 1) == milliseconds(200));
  CHECK(ReconnectDelay(options, 5) == milliseconds(3200));
  CHECK(ReconnectDelay(options, 6) == milliseconds(5000));
  CHECK(ReconnectDelay(options, 1000000) == milliseconds(5000));
}

TEST_CASE("resends after error answers back off too, but by at most a second") {
  TransactionOptions options;
  CHECK(ResendDelay(options, 1) == milliseconds(100));
  CHECK(ResendDelay(options, 2) == milliseconds(200));
  CHECK(ResendDelay(options, 4) == milliseconds(800));
  CHECK(ResendDelay(options, 5) == milliseconds(1000));
  CHECK(ResendDelay(options, 50) == milliseconds(1000));
}

TEST_CASE("fencing modes parse by name") {
  FencingMode mode = FencingMode::kOff;
  CHECK(ParseFencingMode("auto", &mode));
  CHECK(mode == FencingMode::kAuto);
  CHECK(ParseFencingMode("require", &mode));
  CHECK(mode == FencingMode::kRequire);
  CHECK(ParseFencingMode("off", &mode));
  CHECK(mode == FencingMode::kOff);
  CHECK_FALSE(ParseFencingMode("on", &mode));
  CHECK(FencingModeName(FencingMode::kRequire) == "require");
}

TEST_CASE("FormatElapsed: seconds with one decimal, rounded down") {
  const Clock::time_point start{};
  CHECK(FormatElapsed(start, start) == "0.0 s");
  CHECK(FormatElapsed(start, start + std::chrono::milliseconds(1299)) == "1.2 s");
  CHECK(FormatElapsed(start, start + std::chrono::seconds(62)) == "62.0 s");
}

}  // namespace
}  // namespace dst::member::transaction_policy_test
