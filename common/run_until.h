// RunUntil: drives an io_context from a blocking caller (start-up and stop
// of the server, one-shot commands) until a condition holds or a timeout
// passes. The one place that runs io.run_one() in a loop.
//
// Threading: call on the thread that runs `io`, while nothing else runs it.
#pragma once

#include <chrono>
#include <memory>

#include <asio.hpp>

namespace dst {

enum class RunResult { kDone, kTimedOut, kStopped };

// Runs handlers of `io` one at a time until done() is true (checked before
// each), `timeout` passes (kTimedOut), or `io` is stopped from elsewhere
// (kStopped). A stopped io_context is restarted first.
template <typename Predicate>
RunResult RunUntil(asio::io_context& io, Predicate done, std::chrono::milliseconds timeout) {
  auto timed_out = std::make_shared<bool>(false);  // the wait may outlive this call
  asio::steady_timer deadline(io, timeout);
  deadline.async_wait([timed_out](const asio::error_code& ec) {
    if (!ec) *timed_out = true;
  });
  if (io.stopped()) io.restart();
  RunResult result = RunResult::kDone;
  while (!done()) {
    if (*timed_out) {
      result = RunResult::kTimedOut;
      break;
    }
    if (io.run_one() == 0) {
      result = RunResult::kStopped;
      break;
    }
  }
  deadline.cancel();
  return result;
}

}  // namespace dst
