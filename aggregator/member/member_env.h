// MemberEnv: what NbdMember needs from the world besides its event loop,
// behind one seam (after leveldb's Env): the time, timers, and new
// connections to a member's export. DefaultMemberEnv is the real one:
// steady_clock, Asio timers and NbdConnections (libnbd). The unit tests of
// NbdMember's rules use a manual clock, timers that fire when the test moves
// that clock, and scripted connections (fake_member_env.h): resend,
// reconnect, keepalive, fencing and give-up run without a network and
// without waiting.
//
// Contract:
// - Now() is read for every I/O, so it is not virtual: an environment with
//   its own time points it at that time (UseTime), otherwise it reads
//   steady_clock.
// - A MemberTimer runs `fire` once, from the event loop, when the delay given
//   to Start() has passed; never if it is started again, cancelled or
//   destroyed first, even when its expiry is already queued.
// - NewConnection() returns a connection that has not started connecting
//   (member_connection.h).
//
// Threading: one thread, the event loop's. An environment serves any number
// of members on that loop and must outlive them.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <asio.hpp>

#include "aggregator/member/member_connection.h"
#include "aggregator/member/transaction_policy.h"

namespace dst::member {

class MemberTimer {
 public:
  virtual ~MemberTimer() = default;
  // Replaces any earlier Start() that has not fired.
  virtual void Start(std::chrono::milliseconds delay, std::function<void()> fire) = 0;
  virtual void Cancel() = 0;
};

class MemberEnv {
 public:
  virtual ~MemberEnv() = default;

  Clock::time_point Now() const { return now_ != nullptr ? *now_ : Clock::now(); }
  virtual std::unique_ptr<MemberTimer> NewTimer() = 0;
  virtual std::unique_ptr<MemberConnection> NewConnection(const std::string& uri,
                                                          ConnectPlan plan) = 0;

 protected:
  // From now on Now() reads *now, which must outlive this environment.
  void UseTime(const Clock::time_point* now) { now_ = now; }

 private:
  const Clock::time_point* now_ = nullptr;
};

// steady_clock, asio::steady_timer, NbdConnection.
class DefaultMemberEnv final : public MemberEnv {
 public:
  explicit DefaultMemberEnv(asio::io_context& io) : io_(io) {}
  std::unique_ptr<MemberTimer> NewTimer() override;
  std::unique_ptr<MemberConnection> NewConnection(const std::string& uri,
                                                  ConnectPlan plan) override;

 private:
  asio::io_context& io_;
};

}  // namespace dst::member
