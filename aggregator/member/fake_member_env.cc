#include "aggregator/member/fake_member_env.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace dst::member::testing {

using volume::MemberIo;
using volume::MemberOp;

// --- FakeExport -------------------------------------------------------------

FakeExport::FakeExport(const FakeMemberEnv& env) : env_(env) {
  capabilities.size = 1 << 20;
  capabilities.can_flush = true;
  capabilities.can_fua = true;
  capabilities.can_trim = true;
  capabilities.can_zero = true;
  capabilities.can_cache = true;
  capabilities.can_multi_conn = true;
  capabilities.can_block_status = true;
}

void FakeExport::Apply(MemberIo& io) {
  if (io.data == nullptr || io.offset > data.size() || io.length > data.size() - io.offset) return;
  if (io.op == MemberOp::kWrite) std::memcpy(data.data() + io.offset, io.data, io.length);
  if (io.op == MemberOp::kRead) std::memcpy(io.data, data.data() + io.offset, io.length);
}

void FakeExport::Arrive(FakeConnection& connection, std::shared_ptr<MemberIo> io) {
  arrivals_.push_back({env_.now(), io->op, io->offset, io->length, connection.plan_.epoch});
  max_in_flight_seen_ = std::max(max_in_flight_seen_, connection.in_flight());
  const int err = !answering ? kHold : answer ? answer(*io) : 0;
  if (err == kHold) {
    held_.push_back({&connection, std::move(io)});
    return;
  }
  if (err == 0) Apply(*io);
  connection.Complete(std::move(io), err);
}

void FakeExport::AnswerHeld(int err, size_t count) {
  for (; count > 0 && !held_.empty(); --count) {
    Held held = std::move(held_.front());
    held_.pop_front();
    if (err == 0) Apply(*held.io);
    held.connection->Complete(std::move(held.io), err);
  }
}

void FakeExport::Crash() {
  const std::vector<FakeConnection*> dying = connections_;
  for (FakeConnection* connection : dying)
    connection->Die("server closed the connection");
}

std::vector<std::shared_ptr<MemberIo>> FakeExport::TakeHeld(const FakeConnection* connection) {
  std::vector<std::shared_ptr<MemberIo>> taken;
  std::deque<Held> kept;
  for (Held& held : held_) {
    if (held.connection == connection)
      taken.push_back(std::move(held.io));
    else
      kept.push_back(std::move(held));
  }
  held_.swap(kept);
  return taken;
}

// --- FakeConnection ---------------------------------------------------------

FakeConnection::FakeConnection(asio::io_context& io, FakeExport& server, ConnectPlan plan)
    : io_(io), server_(server), plan_(std::move(plan)) {}

FakeConnection::~FakeConnection() {
  Detach();
}

void FakeConnection::AsyncConnect(std::function<void(Status)> done) {
  connect_done_ = std::move(done);
  set_state(State::kConnecting);
  server_.attempts_.push_back({server_.env_.now(), plan_});
  switch (server_.reach) {
    case FakeExport::Reach::kSilent:
      return;
    case FakeExport::Reach::kRefused:
      asio::post(io_, [this, alive = lifetime_.Watch()] {
        if (!alive.expired())
          FailConnect(Status::Error(ECONNREFUSED, "connect: Connection refused"));
      });
      return;
    case FakeExport::Reach::kUp:
      asio::post(io_, [this, alive = lifetime_.Watch()] {
        if (!alive.expired()) Connected();
      });
      return;
  }
}

// Fencing as the dst plugin and NbdConnection do it: a fenced name must be
// confirmed; a probe fences only a server that can.
void FakeConnection::Connected() {
  if (state() != State::kConnecting) return;
  const bool fence_asked = plan_.fencing != ConnectPlan::Fencing::kNone;
  if (plan_.fencing == ConnectPlan::Fencing::kFence && !server_.can_fence) {
    FailConnect(Status::Error(EPROTO,
                              "server accepted a fenced export name but did not "
                              "confirm fencing"));
    return;
  }
  const bool structured = server_.structured_replies && plan_.structured_replies;
  volume::MemberCapabilities capabilities = server_.capabilities;
  capabilities.can_block_status = capabilities.can_block_status && structured;
  const bool refused = plan_.fencing == ConnectPlan::Fencing::kProbe && server_.refuse_fence != 0;
  if (refused) set_fence_refusal(std::strerror(server_.refuse_fence));
  SetNegotiated(capabilities, fence_asked && server_.can_fence && !refused, structured);
  set_state(State::kReady);
  server_.connections_.push_back(this);
  std::exchange(connect_done_, nullptr)(Status::Ok());
}

void FakeConnection::FailConnect(Status status) {
  if (state() != State::kConnecting) return;
  set_state(State::kDead);
  set_last_error(status.message());
  std::exchange(connect_done_, nullptr)(std::move(status));
}

void FakeConnection::Submit(std::shared_ptr<MemberIo> io) {
  ++*in_flight_counter();
  if (!ready()) {
    Complete(std::move(io), ENOTCONN);
    return;
  }
  server_.Arrive(*this, std::move(io));
}

void FakeConnection::Complete(std::shared_ptr<MemberIo> io, int err) {
  asio::post(io_, [in_flight = in_flight_counter(), io = std::move(io), err] {
    --*in_flight;
    io->done(err);
  });
}

void FakeConnection::Close() {
  const bool was_connecting = state() == State::kConnecting;
  if (state() != State::kDead) set_state(State::kClosed);
  Detach();
  if (was_connecting && connect_done_) {
    asio::post(io_, [this, alive = lifetime_.Watch()] {
      if (!alive.expired() && connect_done_)
        std::exchange(connect_done_, nullptr)(Status::Error(ECANCELED, "closed while connecting"));
    });
  }
}

void FakeConnection::Die(const std::string& why) {
  if (state() != State::kReady) return;
  set_state(State::kDead);
  set_last_error(why);
  Detach();
}

void FakeConnection::Detach() {
  std::erase(server_.connections_, this);
  for (std::shared_ptr<MemberIo>& io : server_.TakeHeld(this))
    Complete(std::move(io), ENOTCONN);
}

// --- FakeMemberEnv ----------------------------------------------------------

class FakeMemberEnv::FakeTimer final : public MemberTimer {
 public:
  explicit FakeTimer(FakeMemberEnv& env) : env_(env) { env_.timers_.push_back(this); }
  ~FakeTimer() override { std::erase(env_.timers_, this); }

  void Start(std::chrono::milliseconds delay, std::function<void()> fire) override {
    due_ = env_.now_ + delay;
    fire_ = std::move(fire);
    arm_ = ++env_.arms_;
  }
  void Cancel() override { fire_ = nullptr; }

  bool armed() const { return fire_ != nullptr; }
  Clock::time_point due() const { return due_; }
  uint64_t arm() const { return arm_; }
  std::function<void()> Take() { return std::exchange(fire_, nullptr); }

 private:
  FakeMemberEnv& env_;
  Clock::time_point due_;
  uint64_t arm_ = 0;
  std::function<void()> fire_;
};

// Any fixed start will do; an hour in keeps "since" arithmetic away from 0.
FakeMemberEnv::FakeMemberEnv(asio::io_context& io)
    : io_(io), now_(Clock::time_point() + std::chrono::hours(1)) {
  UseTime(&now_);
}

FakeMemberEnv::~FakeMemberEnv() = default;

FakeExport& FakeMemberEnv::Export(const std::string& uri) {
  std::unique_ptr<FakeExport>& server = exports_[uri];
  if (!server) server = std::make_unique<FakeExport>(*this);
  return *server;
}

void FakeMemberEnv::Settle() {
  for (;;) {
    io_.restart();
    if (io_.poll() == 0) return;
  }
}

FakeMemberEnv::FakeTimer* FakeMemberEnv::NextTimer() const {
  FakeTimer* next = nullptr;
  for (FakeTimer* timer : timers_) {
    if (!timer->armed()) continue;
    if (next == nullptr || timer->due() < next->due() ||
        (timer->due() == next->due() && timer->arm() < next->arm()))
      next = timer;
  }
  return next;
}

void FakeMemberEnv::FireNext() {
  FakeTimer* next = NextTimer();
  now_ = std::max(now_, next->due());
  next->Take()();
  Settle();
}

void FakeMemberEnv::Advance(std::chrono::milliseconds duration) {
  const Clock::time_point target = now_ + duration;
  Settle();
  for (FakeTimer* next = NextTimer(); next != nullptr && next->due() <= target; next = NextTimer())
    FireNext();
  now_ = std::max(now_, target);
  Settle();
}

bool FakeMemberEnv::AdvanceUntil(const std::function<bool()>& done,
                                 std::chrono::milliseconds limit) {
  const Clock::time_point deadline = now_ + limit;
  Settle();
  while (!done()) {
    FakeTimer* next = NextTimer();
    if (next == nullptr || next->due() > deadline) {
      now_ = std::max(now_, deadline);
      Settle();
      return done();
    }
    FireNext();
  }
  return true;
}

std::unique_ptr<MemberTimer> FakeMemberEnv::NewTimer() {
  return std::make_unique<FakeTimer>(*this);
}

std::unique_ptr<MemberConnection> FakeMemberEnv::NewConnection(const std::string& uri,
                                                               ConnectPlan plan) {
  return std::make_unique<FakeConnection>(io_, Export(uri), std::move(plan));
}

}  // namespace dst::member::testing
