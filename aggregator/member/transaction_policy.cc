#include "aggregator/member/transaction_policy.h"

#include <algorithm>
#include <cerrno>
#include <string>

namespace dst::member {

bool ParseFencingMode(std::string_view text, FencingMode* out) {
  if (text == "auto")
    *out = FencingMode::kAuto;
  else if (text == "require")
    *out = FencingMode::kRequire;
  else if (text == "off")
    *out = FencingMode::kOff;
  else
    return false;
  return true;
}

std::string_view FencingModeName(FencingMode mode) {
  switch (mode) {
    case FencingMode::kAuto:
      return "auto";
    case FencingMode::kRequire:
      return "require";
    case FencingMode::kOff:
      return "off";
  }
  return "?";
}

ErrorAction ClassifyError(volume::MemberOp op, int err) {
  switch (err) {
    case ETIMEDOUT:
    case ENOTCONN:
    case ECONNRESET:
    case ECONNREFUSED:
    case EPIPE:
    case ESHUTDOWN:
      return ErrorAction::kReconnect;
    case EIO:
    case ENOMEM:
    case EAGAIN:
      return op == volume::MemberOp::kFlush && err == EIO ? ErrorAction::kFail
                                                          : ErrorAction::kResend;
    default:
      return ErrorAction::kFail;  // EINVAL, EPERM, EROFS, ENOSPC, ENOTSUP, EOVERFLOW, ...
  }
}

bool MaySendAgain(const TransactionOptions& options, const SendHistory& history,
                  Clock::time_point now) {
  if (options.retries > 0 && history.sends > options.retries) return false;
  if (options.retry_window.count() > 0 && now - history.first_send >= options.retry_window)
    return false;
  return true;
}

std::chrono::milliseconds ReconnectDelay(const TransactionOptions& options, unsigned failures) {
  std::chrono::milliseconds delay = options.backoff_initial;
  for (unsigned i = 0; i < failures && delay < options.backoff_max; ++i)
    delay *= 2;
  return std::min(delay, options.backoff_max);
}

std::chrono::milliseconds ResendDelay(const TransactionOptions& options, unsigned sends) {
  return std::min(ReconnectDelay(options, sends > 0 ? sends - 1 : 0),
                  std::chrono::milliseconds(1000));
}

std::string FormatElapsed(Clock::time_point start, Clock::time_point now) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
  return std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100) + " s";
}

}  // namespace dst::member
