// FakeMemberEnv: a MemberEnv (member_env.h) for the unit tests of
// NbdMember's rules. Its clock moves only when the test advances it, its
// timers fire as the clock passes their time (in time order), and its
// connections reach scripted exports (FakeExport) that connect, refuse,
// stay silent, answer, hold or fail I/Os as the test says. Nothing touches
// the network and nothing sleeps: a test of a 60 s retry window runs in
// milliseconds, and the same way every time.
//
// FakeConnection keeps MemberConnection's contract (done exactly once, never
// inside Submit(), ENOTCONN for I/O in flight on a connection that dies or
// is closed or destroyed), so that NbdMember sees what it would see from
// NbdConnection; the failure messages are its own.
//
// Threading: one thread. The test drives the io_context through Settle(),
// Advance() and AdvanceUntil(), never with run().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/member_connection.h"
#include "aggregator/member/member_env.h"
#include "aggregator/volume/member_io.h"
#include "common/lifetime.h"

namespace dst::member::testing {

class FakeConnection;
class FakeMemberEnv;

// The server side of one member: what connecting finds and how I/O is
// answered. Tests set the public fields at any time; a change applies to
// what happens next (a running connection keeps what it negotiated).
class FakeExport {
 public:
  enum class Reach : uint8_t {
    kUp,       // connects
    kRefused,  // connect fails at once (ECONNREFUSED)
    kSilent,   // connect never completes
  };
  // What `answer` returns to keep an I/O until AnswerHeld() or until its
  // connection ends.
  static constexpr int kHold = -1;

  explicit FakeExport(const FakeMemberEnv& env);
  FakeExport(const FakeExport&) = delete;
  FakeExport& operator=(const FakeExport&) = delete;

  volume::MemberCapabilities capabilities;  // what a connection negotiates
  bool can_fence = true;                    // confirms fenced names, as the dst plugin does
  int refuse_fence = 0;  // an errno: a probe's fenced name is refused (an older epoch)
  bool structured_replies = true;
  Reach reach = Reach::kUp;
  bool answering = true;  // false: every I/O is held (a hung server)
  // Each I/O's errno as it arrives, or kHold; unset: 0.
  std::function<int(const volume::MemberIo& io)> answer;
  // The export's contents: successful reads and writes within it use it.
  std::vector<uint8_t> data;

  // Every connect attempt, with the time and the plan (epoch, fencing).
  struct Attempt {
    Clock::time_point at;
    ConnectPlan plan;
  };
  const std::vector<Attempt>& attempts() const { return attempts_; }
  // Every I/O that reached the export, in arrival order.
  struct Arrival {
    Clock::time_point at;
    volume::MemberOp op;
    uint64_t offset;
    uint64_t length;
    uint64_t epoch;  // of the connection it came on
  };
  const std::vector<Arrival>& arrivals() const { return arrivals_; }
  // The most I/Os ever in flight on one connection.
  size_t max_in_flight_seen() const { return max_in_flight_seen_; }
  size_t held() const { return held_.size(); }
  size_t connections() const { return connections_.size(); }

  // Answers up to `count` held I/Os, oldest first, with `err`.
  void AnswerHeld(int err = 0, size_t count = SIZE_MAX);
  // The server goes away: every connection dies and its held I/Os end with
  // ENOTCONN. Connect attempts then find `reach` (set it before, or after).
  void Crash();

 private:
  friend class FakeConnection;
  struct Held {
    FakeConnection* connection;
    std::shared_ptr<volume::MemberIo> io;
  };

  // Applies a successful read or write to `data`.
  void Apply(volume::MemberIo& io);
  void Arrive(FakeConnection& connection, std::shared_ptr<volume::MemberIo> io);
  // Held I/Os of `connection`, taken out of the queue.
  std::vector<std::shared_ptr<volume::MemberIo>> TakeHeld(const FakeConnection* connection);

  const FakeMemberEnv& env_;
  std::vector<Attempt> attempts_;
  std::vector<Arrival> arrivals_;
  std::deque<Held> held_;
  std::vector<FakeConnection*> connections_;  // connected and alive
  size_t max_in_flight_seen_ = 0;
};

class FakeConnection final : public MemberConnection {
 public:
  FakeConnection(asio::io_context& io, FakeExport& server, ConnectPlan plan);
  ~FakeConnection() override;

  void AsyncConnect(std::function<void(Status)> done) override;
  void Submit(std::shared_ptr<volume::MemberIo> io) override;
  void Close() override;

 private:
  friend class FakeExport;
  void Connected();
  void FailConnect(Status status);
  // The server went away.
  void Die(const std::string& why);
  // Ends every held I/O with ENOTCONN and leaves the export's list.
  void Detach();
  void Complete(std::shared_ptr<volume::MemberIo> io, int err);

  asio::io_context& io_;
  FakeExport& server_;
  const ConnectPlan plan_;
  std::function<void(Status)> connect_done_;
  Lifetime lifetime_;
};

class FakeMemberEnv final : public MemberEnv {
 public:
  explicit FakeMemberEnv(asio::io_context& io);
  ~FakeMemberEnv() override;

  // The export behind `uri`, made on first use.
  FakeExport& Export(const std::string& uri);
  Clock::time_point now() const { return now_; }

  // Runs posted handlers until none is left; no time passes.
  void Settle();
  // Moves the clock on by `duration`, firing each timer as its time comes
  // and settling after each.
  void Advance(std::chrono::milliseconds duration);
  // Advances from timer to timer until done() holds (checked after each) or
  // `limit` has passed; returns done().
  bool AdvanceUntil(const std::function<bool()>& done, std::chrono::milliseconds limit);

  std::unique_ptr<MemberTimer> NewTimer() override;
  std::unique_ptr<MemberConnection> NewConnection(const std::string& uri,
                                                  ConnectPlan plan) override;

 private:
  class FakeTimer;
  // The armed timer due first (ties: armed first), or nullptr.
  FakeTimer* NextTimer() const;
  void FireNext();

  asio::io_context& io_;
  Clock::time_point now_;
  std::map<std::string, std::unique_ptr<FakeExport>> exports_;
  std::vector<FakeTimer*> timers_;
  uint64_t arms_ = 0;
};

}  // namespace dst::member::testing
