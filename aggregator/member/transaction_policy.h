// TransactionPolicy: the rules of DST-style member transactions, as pure
// functions so that they can be unit-tested without a network: what an
// error means (give up, send again, or reconnect first), when an I/O's
// resend budget is spent, and how long to wait before reconnecting.
//
// Threading: immutable values and pure functions; safe anywhere.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "aggregator/volume/member_io.h"

namespace dst::member {

using Clock = std::chrono::steady_clock;

// How the aggregator uses the dst plugin's fencing (see docs/transactions.md).
enum class FencingMode : uint8_t {
  kAuto,     // fence members that can; warn about those that cannot
  kRequire,  // refuse to start with a member that cannot fence
  kOff,      // never fence (diagnosis only: resent writes are unprotected)
};

// Parses "auto", "require", "off".
bool ParseFencingMode(std::string_view text, FencingMode* out);
std::string_view FencingModeName(FencingMode mode);

struct TransactionOptions {
  // Deadline of one member I/O (and of one connection attempt).
  std::chrono::milliseconds io_timeout{5000};
  // Sends after the first; 0: bounded by retry_window alone.
  unsigned retries = 0;
  // Time from an I/O's first send after which it is not sent again; 0: no
  // limit (with retries 0 as well, an I/O waits for its member forever).
  std::chrono::milliseconds retry_window{60000};
  // An idle connection is pinged this often; 0: never.
  std::chrono::milliseconds keepalive{5000};
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{5000};
  FencingMode fencing = FencingMode::kAuto;
  // Member I/Os in flight on one member connection (keepalive pings aside);
  // more wait in the member, in order, and their deadline starts only when
  // they are sent. Enough to keep a member's disks busy; few enough that a
  // request split into tens of thousands of member I/Os (a huge trim, a
  // member with a tiny maximum request) does not bury the member, nor time
  // out while queued, nor all come back at once after a reconnect. 0 is
  // taken as 1.
  unsigned max_in_flight = 256;
  // The fence session of the member's connections, 32 lowercase hex digits;
  // empty: a random one per member (and aggregator run). Mirror and raid10
  // members use one derived from the volume and the slot, the same in every
  // aggregator, so that a newer owner fences an older one.
  std::string fence_session;
  // Added to the member's own epoch (1, then one more per connect attempt):
  // the volume's ownership epoch << 32 for mirror and raid10 members, 0
  // otherwise. Non-zero also means that an ESHUTDOWN answer to a write, trim
  // or zero is a newer owner's fence (NbdMember::superseded()).
  uint64_t fence_epoch_base = 0;
};

// What to do with a member I/O whose attempt ended with `err`.
enum class ErrorAction : uint8_t {
  kFail,       // final: the member answered, and asking again cannot help
  kResend,     // transient answer (e.g. EIO from a flaky disk): send again
  kReconnect,  // the connection is unusable: reconnect, then send again
};

// ETIMEDOUT stands for "deadline expired" here; ENOTCONN, ECONNRESET, EPIPE
// and ESHUTDOWN for a lost connection or a server going away (ESHUTDOWN is
// also what a fencing member answers a stale epoch). A flush answered with
// EIO is final: a member whose flush failed may have dropped the dirty data,
// and a second flush could then succeed without having written it.
ErrorAction ClassifyError(volume::MemberOp op, int err);

// One transaction's sending history.
struct SendHistory {
  Clock::time_point first_send;
  unsigned sends = 0;  // attempts made so far, the first included
};

// Whether one more send is allowed at `now`.
bool MaySendAgain(const TransactionOptions& options, const SendHistory& history,
                  Clock::time_point now);

// The wait before reconnect attempt `failures` (0 for the first attempt
// after a loss): initial, doubled each time, capped at max.
std::chrono::milliseconds ReconnectDelay(const TransactionOptions& options, unsigned failures);

// "12.3 s": the time from `start` to `now`, for log lines.
std::string FormatElapsed(Clock::time_point start, Clock::time_point now);

// The wait before resending an I/O that got a transient error answer, after
// `sends` sends: like ReconnectDelay, but capped at one second, since the
// member is there and answering.
std::chrono::milliseconds ResendDelay(const TransactionOptions& options, unsigned sends);

}  // namespace dst::member
