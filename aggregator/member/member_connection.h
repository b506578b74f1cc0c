// MemberConnection: one connection to a member's export, as NbdMember uses
// it: connect once, submit I/Os, close. NbdConnection (nbd_connection.h) is
// the real one, libnbd driven by Asio; the unit tests of NbdMember's rules
// substitute scripted ones (member_env.h, fake_member_env.h).
//
// Contract, for every implementation:
// - AsyncConnect() is called at most once. `done` is posted, never run inside
//   the call, and dropped if the connection is destroyed first. Ok means the
//   connection is ready() and capabilities(), fenced() and
//   structured_replies() are valid.
// - Submit(): every MemberIo gets exactly one io->done(err), never from inside
//   Submit(). On a connection that is not ready, or one that dies, is closed
//   or is destroyed with the I/O in flight, err is non-zero (ENOTCONN).
//   in_flight() counts submitted I/Os whose done has not run; it is lowered
//   before done runs.
// - Close() ends the connection at once (a pending connect gets ECANCELED).
//   A connection is used once: dead or closed, it stays so.
//
// The facts NbdMember reads for every I/O it sends (ready, in_flight,
// structured_replies) are plain fields of this base, kept up to date by the
// implementation: choosing a connection costs no virtual call. Only the three
// operations are virtual.
//
// Threading: not thread-safe. Every call, and the event loop that drives the
// connection, run on one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "aggregator/member/member_tls.h"
#include "aggregator/volume/member_io.h"
#include "common/status.h"

namespace dst::member {

// How a connection asks for its export. A fenced connection asks for
// "NAME@dst-fence:SESSION:EPOCH" and requires the dst plugin's confirmation
// (export description "dst-fence SESSION EPOCH"); see docs/transactions.md.
struct ConnectPlan {
  enum class Fencing : uint8_t {
    kNone,   // plain export name
    kFence,  // fenced name; fail unless the server confirms
    kProbe,  // ask with NBD_OPT_INFO first; fence if confirmed, else plain
  };
  Fencing fencing = Fencing::kNone;
  std::string session;  // 32 hex digits; never written to a log (RedactSession)
  uint64_t epoch = 0;
  // TCP keepalive idle time (TCP members only); 0: leave the system default.
  std::chrono::seconds tcp_keepalive{0};
  // Credentials for a TLS member (nbds://, nbds+unix://); unused for a plain one.
  MemberTls tls;
  // Ask for structured replies and base:allocation (block status needs
  // them). Without, a read's answer is a simple reply, which libnbd takes
  // in two receives instead of four: cheaper for a connection that carries
  // reads.
  bool structured_replies = true;
};

class MemberConnection {
 public:
  enum class State : uint8_t { kIdle, kConnecting, kReady, kDead, kClosed };

  virtual ~MemberConnection() = default;
  MemberConnection(const MemberConnection&) = delete;
  MemberConnection& operator=(const MemberConnection&) = delete;

  // Starts connecting and the NBD handshake; `done` gets Ok once ready, else
  // the error (errno and a message, e.g. "connect: No such file or directory").
  virtual void AsyncConnect(std::function<void(Status)> done) = 0;
  // Sends one I/O, validated by the caller against capabilities().
  virtual void Submit(std::shared_ptr<volume::MemberIo> io) = 0;
  // Ends the connection; I/Os in flight complete with ENOTCONN.
  virtual void Close() = 0;

  bool ready() const { return state_ == State::kReady; }
  // Failed to connect, or lost after connecting (not after Close()).
  bool dead() const { return state_ == State::kDead; }
  // Why the connection failed or died; empty otherwise.
  const std::string& last_error() const { return last_error_; }
  // Submitted I/Os whose done has not run yet.
  size_t in_flight() const { return *in_flight_; }
  // Valid once connected.
  const volume::MemberCapabilities& capabilities() const { return capabilities_; }
  // Valid once connected: the server confirmed fencing for the plan's epoch.
  bool fenced() const { return fenced_; }
  // Valid once connected: why the server refused the fenced name of a probe (the connection then
  // went on unfenced); empty when it did not refuse it.
  const std::string& fence_refusal() const { return fence_refusal_; }
  // Valid once connected: structured replies were negotiated.
  bool structured_replies() const { return structured_replies_; }

 protected:
  MemberConnection() = default;

  State state() const { return state_; }
  void set_state(State state) { state_ = state; }
  void set_last_error(std::string text) { last_error_ = std::move(text); }
  void set_fence_refusal(std::string why) { fence_refusal_ = std::move(why); }
  // What the handshake found, recorded once connected.
  void SetNegotiated(const volume::MemberCapabilities& capabilities, bool fenced,
                     bool structured_replies) {
    capabilities_ = capabilities;
    fenced_ = fenced;
    structured_replies_ = structured_replies;
  }
  // The in_flight() count, shared with completions that may be posted to run
  // after the connection is gone.
  const std::shared_ptr<size_t>& in_flight_counter() const { return in_flight_; }

 private:
  State state_ = State::kIdle;
  std::string last_error_;
  volume::MemberCapabilities capabilities_;
  bool fenced_ = false;
  std::string fence_refusal_;
  bool structured_replies_ = false;
  std::shared_ptr<size_t> in_flight_ = std::make_shared<size_t>(0);
};

// `text` with every occurrence of `session` replaced by "...": what a message
// about a fenced export name ("disk0@dst-fence:...:7") may show in a log. The
// session is what lets a connection join the member's fence, so it stays out
// of logs, failures and status.
std::string RedactSession(std::string_view text, std::string_view session);

}  // namespace dst::member
