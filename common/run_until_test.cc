#include "common/run_until.h"

#include <doctest/doctest.h>

#include <chrono>

namespace dst::run_until_test {
namespace {

using namespace std::chrono_literals;

TEST_CASE("RunUntil runs handlers until the condition holds") {
  asio::io_context io;
  int ran = 0;
  for (int i = 0; i < 5; ++i)
    asio::post(io, [&ran] { ++ran; });
  CHECK(RunUntil(
            io, [&] { return ran == 3; }, 10s) == RunResult::kDone);
  CHECK(ran == 3);
}

TEST_CASE("RunUntil gives up at the timeout while work is pending") {
  asio::io_context io;
  asio::steady_timer never(io, 1h);
  never.async_wait([](const asio::error_code&) {});
  const auto start = std::chrono::steady_clock::now();
  CHECK(RunUntil(
            io, [] { return false; }, 50ms) == RunResult::kTimedOut);
  CHECK(std::chrono::steady_clock::now() - start >= 50ms);
  never.cancel();
}

TEST_CASE("RunUntil reports an io_context stopped from elsewhere, and restarts it next time") {
  asio::io_context io;
  asio::post(io, [&io] { io.stop(); });
  CHECK(RunUntil(
            io, [] { return false; }, 10s) == RunResult::kStopped);
  bool ran = false;
  asio::post(io, [&ran] { ran = true; });
  CHECK(RunUntil(
            io, [&] { return ran; }, 10s) == RunResult::kDone);
}

}  // namespace
}  // namespace dst::run_until_test
