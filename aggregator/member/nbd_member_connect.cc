// NbdMember's connections: the first connection and the extra ones of a
// multi-conn member, reconnection with backoff under a new fencing epoch,
// the identity check of a member that comes back, and ConnectAll at start.
// The transactions that run over them are in nbd_member.cc.
#include "aggregator/member/nbd_member.h"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <utility>

#include "common/duration.h"
#include "common/join.h"
#include "common/log.h"
#include "common/run_until.h"

namespace dst::member {

using std::chrono::milliseconds;

namespace {

bool IsPowerOfTwo(unsigned n) {
  return n != 0 && (n & (n - 1)) == 0;
}

}  // namespace

ConnectPlan NbdMember::PlanFor(ConnectPlan::Fencing fencing) const {
  ConnectPlan plan;
  plan.fencing = fencing;
  plan.session = session_;
  plan.epoch = options_.fence_epoch_base + epoch_;
  plan.tls = tls_;
  if (options_.keepalive.count() > 0)
    plan.tcp_keepalive =
        std::max(std::chrono::seconds(1),
                 std::chrono::duration_cast<std::chrono::seconds>(options_.keepalive));
  return plan;
}

std::unique_ptr<MemberConnection> NbdMember::NewConnection(ConnectPlan::Fencing fencing) {
  return env_.NewConnection(uri_, PlanFor(fencing));
}

// --- first connection -------------------------------------------------------

void NbdMember::AsyncConnect(std::function<void(Status)> done) {
  const auto fencing = options_.fencing == FencingMode::kOff ? ConnectPlan::Fencing::kNone
                                                             : ConnectPlan::Fencing::kProbe;
  connections_.push_back(NewConnection(fencing));
  CountConnections();
  // A connection drops its callback when destroyed, and connections never
  // outlive the member: capturing `this` is safe.
  connections_.front()->AsyncConnect([this, done = std::move(done)](Status status) mutable {
    OnFirstConnection(std::move(status), std::move(done));
  });
}

void NbdMember::OnFirstConnection(Status status, std::function<void(Status)> done) {
  if (abandoned_) {
    CloseForGood();
    done(Status::Error(EIO, last_error_));
    return;
  }
  if (!status.ok()) {
    // Not retried: an unreachable member at start is a configuration error.
    last_error_ = status.message();
    SetState(State::kFailed, last_error_);
    done(std::move(status));
    return;
  }
  capabilities_ = connections_.front()->capabilities();
  fenced_ = connections_.front()->fenced();
  if (!fenced_ && options_.fencing == FencingMode::kRequire) {
    const std::string& refusal = connections_.front()->fence_refusal();
    last_error_ = refusal.empty()
                      ? "cannot fence (not a dst export node), and fencing is required"
                      : "the export refused the fenced name (" + refusal +
                            "): an older fencing epoch of this member's session, a read-only "
                            "connection, or not a dst export node; fencing is required";
    SetState(State::kFailed, last_error_);
    done(Status::Error(EPROTO, last_error_));
    return;
  }
  WarnIfSmallRequests();
  AddExtraConnections([this, done = std::move(done)] {
    if (abandoned_) {
      CloseForGood();
      done(Status::Error(EIO, last_error_));
      return;
    }
    last_activity_ = env_.Now();
    SetState(State::kReady, fenced_ ? "fenced, epoch " + std::to_string(epoch()) : "not fenced");
    ArmTick();
    DispatchWaiting();  // whatever was submitted while connecting
    done(Status::Ok());
  });
}

// A member with a tiny maximum request (NBD_INFO_BLOCK_SIZE allows 512)
// turns one large client request into very many member I/Os. It works, with
// the in-flight bound like any slow member, but it is worth knowing.
void NbdMember::WarnIfSmallRequests() const {
  constexpr uint32_t kSmallRequest = 64 * 1024;
  if (capabilities_.max_request >= kSmallRequest) return;
  LOG_WARNING(
      "member %s: maximum request size is %u bytes (under 64 KiB): a large client request "
      "becomes many member I/Os, at most %zu in flight per connection",
      log_name_.c_str(), capabilities_.max_request, MaxInFlight());
}

// Without multi-conn a server may show one connection stale data written
// through another, so extra connections are only opened when it promises.
// They share the member's epoch; one that fails or sees another export is
// dropped, and the member works with the others.
void NbdMember::AddExtraConnections(std::function<void()> all_done) {
  const unsigned wanted = capabilities_.can_multi_conn ? wanted_connections_ : 1;
  if (connections_.size() >= wanted) {
    all_done();
    return;
  }
  auto join = MakeJoin([all_done = std::move(all_done)](int) { all_done(); });
  const auto fencing = fenced_ ? ConnectPlan::Fencing::kFence : ConnectPlan::Fencing::kNone;
  // The first connection has structured replies for block status; the
  // others carry the reads, whose simple answers cost libnbd half the
  // receives (ConnectionFor).
  ConnectPlan plan = PlanFor(fencing);
  plan.structured_replies = false;
  for (size_t i = connections_.size(); i < wanted; ++i) {
    extras_.push_back(env_.NewConnection(uri_, plan));
    MemberConnection* extra = extras_.back().get();
    extra->AsyncConnect([this, extra, part = Part(join)](const Status& status) {
      AdoptExtraConnection(extra, status);
      part(0);
    });
  }
  join->Arrive(0);
}

void NbdMember::AdoptExtraConnection(MemberConnection* connection, const Status& status) {
  auto it = std::find_if(extras_.begin(), extras_.end(),
                         [connection](const auto& extra) { return extra.get() == connection; });
  if (it == extras_.end()) return;
  std::unique_ptr<MemberConnection> extra = std::move(*it);
  extras_.erase(it);
  if (status.ok() && CheckIdentity(*extra).ok()) {
    connections_.push_back(std::move(extra));
    CountConnections();
    DispatchWaiting();
  }
}

// Transitions from the first connect are left to the caller, which reports
// start-up as a whole (one line when it fails).
void NbdMember::SetState(State state, const std::string& why) {
  if (state == state_) return;
  if (state_ != State::kConnecting)
    LOG_INFO("member %s: %s -> %s: %s", log_name_.c_str(),
             std::string(MemberStateName(state_)).c_str(),
             std::string(MemberStateName(state)).c_str(), why.c_str());
  state_ = state;
}

// --- reconnection -----------------------------------------------------------

void NbdMember::StartReconnect(const std::string& cause) {
  if (state_ != State::kReady) return;  // already reconnecting
  last_error_ = cause;
  SetState(State::kReconnecting, cause);
  unreachable_since_ = env_.Now();
  connect_failures_in_row_ = 0;
  DropConnections(cause);
  ScheduleConnectAttempt(ReconnectDelay(options_, 0));
}

// Every send in flight is lost with its connection: each waits for the next
// connection, ahead of the I/Os never sent (or gives up if its budget is
// spent).
void NbdMember::DropConnections(const std::string& cause) {
  ++generation_;
  std::vector<uint64_t> lost;
  for (const auto& [id, transaction] : transactions_)
    if (transaction.in_flight) lost.push_back(id);
  std::sort(lost.begin(), lost.end());  // resent in their original order
  for (const uint64_t id : lost) {
    Transaction& transaction = transactions_.at(id);
    transaction.in_flight = false;
    --in_flight_;
    if (transaction.ping) {
      transactions_.erase(id);
      continue;
    }
    transaction.last_error = cause;
    Requeue(id, milliseconds(0));
  }
  deadlines_.clear();
  // A fence probe lost with its connection proves nothing: what it held is
  // resent on the next connection, whose open a fence would refuse.
  fence_probe_ = 0;
  ReleaseFenceSuspects(/*fenced=*/false, cause);
  // Closing posts ENOTCONN answers for what was in flight; OnAnswer ignores
  // them (the transactions are no longer in flight).
  for (auto& connection : connections_)
    connection->Close();
  connections_.clear();
  CountConnections();
  extras_.clear();
}

void NbdMember::ScheduleConnectAttempt(milliseconds delay) {
  connect_timer_->Start(delay, [this] { AttemptConnect(); });
}

// One attempt, under a new epoch: a fencing member then refuses whatever
// the dropped connections still had queued.
void NbdMember::AttemptConnect() {
  ++epoch_;
  const uint64_t generation = ++generation_;
  reconnecting_ =
      NewConnection(fenced_ ? ConnectPlan::Fencing::kFence : ConnectPlan::Fencing::kNone);
  reconnecting_->AsyncConnect(
      [this, generation](Status status) { OnReconnectResult(generation, std::move(status)); });
  connect_timer_->Start(options_.io_timeout, [this, generation] {
    if (generation != generation_ || !reconnecting_) return;
    reconnecting_.reset();  // drops its callback
    OnReconnectResult(generation,
                      Status::Error(ETIMEDOUT, "no answer to connect within " +
                                                   FormatDuration(options_.io_timeout)));
  });
}

void NbdMember::OnReconnectResult(uint64_t generation, Status status) {
  if (generation != generation_) return;
  connect_timer_->Cancel();
  std::unique_ptr<MemberConnection> connection = std::move(reconnecting_);
  bool refused = false;
  if (status.ok()) {
    status = CheckIdentity(*connection);
    refused = !status.ok();
  }
  if (!status.ok()) {
    OnReconnectFailed(status.message(), refused);
    return;
  }
  connections_.push_back(std::move(connection));
  CountConnections();
  ++counters_.reconnects;
  connect_failures_in_row_ = 0;
  last_activity_ = env_.Now();
  SetState(State::kReady, std::string(fenced_ ? "fenced" : "not fenced") + ", epoch " +
                              std::to_string(epoch()) + ", after " +
                              FormatElapsed(unreachable_since_, last_activity_) + ", " +
                              std::to_string(waiting()) + " I/Os to resend");
  DispatchWaiting();
  AddExtraConnections([] {});
}

void NbdMember::OnReconnectFailed(const std::string& message, bool refused) {
  ++counters_.connect_failures;
  ++connect_failures_in_row_;
  last_error_ = message;
  // One line per doubling keeps a long outage readable.
  if (IsPowerOfTwo(connect_failures_in_row_))
    LOG_WARNING("member %s: reconnect attempt %u failed: %s", log_name_.c_str(),
                connect_failures_in_row_, message.c_str());
  // Each failed attempt spends one attempt of every waiting I/O.
  const Clock::time_point now = env_.Now();
  VisitWaiting([&](uint64_t id, Transaction& transaction) {
    ++transaction.history.sends;
    transaction.last_error = "reconnect: " + message;
    if (MaySendAgain(options_, transaction.history, now)) return true;
    GiveUp(id);
    return false;
  });
  const bool out_of_tries = options_.retries > 0 && connect_failures_in_row_ > options_.retries;
  if (refused) {
    SetState(State::kFailed, message);
    FailAllWaiting(message);
  } else if (out_of_tries || UnreachableTooLong(now)) {
    FailUnreachable(now);
  }
  ScheduleConnectAttempt(refused ? options_.backoff_max
                                 : ReconnectDelay(options_, connect_failures_in_row_));
}

bool NbdMember::UnreachableTooLong(Clock::time_point now) const {
  return state_ == State::kReconnecting && options_.retry_window.count() > 0 &&
         now - unreachable_since_ >= options_.retry_window;
}

// The member's budget is spent: what waits fails now, and so will new I/O.
void NbdMember::FailUnreachable(Clock::time_point now) {
  const std::string cause =
      "unreachable for " + FormatElapsed(unreachable_since_, now) + ": " + last_error_;
  SetState(State::kFailed, cause);
  FailAllWaiting("member failed: " + cause);
}

// A member that comes back must be the export the volume was built on.
Status NbdMember::CheckIdentity(const MemberConnection& connection) const {
  const volume::MemberCapabilities& now = connection.capabilities();
  const volume::MemberCapabilities& was = capabilities_;
  if (now.size != was.size)
    return Status::Error(EPROTO, "refused: came back with size " + std::to_string(now.size) +
                                     ", was " + std::to_string(was.size));
  if (connection.fenced() != fenced_)
    return Status::Error(EPROTO, "refused: came back without fencing");
  const bool same_flags =
      now.read_only == was.read_only && now.can_flush == was.can_flush &&
      now.can_fua == was.can_fua && now.can_trim == was.can_trim && now.can_zero == was.can_zero &&
      now.can_fast_zero == was.can_fast_zero && now.can_cache == was.can_cache &&
      now.can_multi_conn == was.can_multi_conn &&
      // A connection without structured replies cannot have block status.
      (!connection.structured_replies() || now.can_block_status == was.can_block_status);
  if (!same_flags) return Status::Error(EPROTO, "refused: came back with other export flags");
  if (now.min_block != was.min_block || now.max_request != was.max_request)
    return Status::Error(EPROTO, "refused: came back with other block size constraints");
  return Status::Ok();
}

Status NbdMember::ConnectAll(asio::io_context& io, std::vector<std::unique_ptr<NbdMember>>& members,
                             milliseconds timeout) {
  // Shared with the callbacks, which may run after we return (on timeout).
  struct Progress {
    bool done = false;
    std::vector<std::optional<Status>> results;
  };
  auto progress = std::make_shared<Progress>();
  progress->results.resize(members.size());
  auto join = MakeJoin([progress](int) { progress->done = true; });
  for (size_t i = 0; i < members.size(); ++i) {
    members[i]->AsyncConnect([progress, i, part = Part(join)](Status status) {
      progress->results[i] = std::move(status);
      part(0);
    });
  }
  join->Arrive(0);
  const RunResult run = RunUntil(
      io, [&progress] { return progress->done; }, timeout);
  const Status unfinished =
      run == RunResult::kTimedOut
          ? Status::Error(ETIMEDOUT,
                          "connect timed out after " + std::to_string(timeout.count()) + " ms")
          : Status::Error(ECANCELED, "event loop stopped while connecting");
  for (size_t i = 0; i < members.size(); ++i) {
    const Status& result = progress->results[i].value_or(unfinished);
    if (!result.ok()) return result.Wrap("member " + members[i]->name());
  }
  return Status::Ok();
}

}  // namespace dst::member
