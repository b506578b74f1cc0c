#include "aggregator/member/nbd_member.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <utility>

#include "common/duration.h"
#include "common/join.h"
#include "common/log.h"
#include "common/run_until.h"

namespace dst::member {

using std::chrono::milliseconds;
using volume::MemberIo;
using volume::MemberOp;
using volume::MemberOpName;

namespace {

// 128 random bits: names this member's connections for fencing; a restarted
// aggregator is a new session.
std::string NewSession() {
  std::random_device random;
  std::string hex;
  for (int i = 0; i < 4; ++i) {
    char word[9];
    std::snprintf(word, sizeof word, "%08x", static_cast<unsigned>(random()));
    hex += word;
  }
  return hex;
}

// How often deadlines, waiting I/Os, dead connections and keepalive are
// checked: fine enough that a deadline is late by at most a fifth of itself.
milliseconds TickPeriod(const TransactionOptions& options) {
  return std::clamp(options.io_timeout / 5, milliseconds(20), milliseconds(200));
}

std::string Describe(const MemberIo& io) {
  std::string text(MemberOpName(io.op));
  if (io.op == MemberOp::kFlush) return text;
  return text + " of " + std::to_string(io.length) + " bytes at member offset " +
         std::to_string(io.offset);
}

std::string SecondsSince(Clock::time_point start, Clock::time_point now) {
  const auto ms = std::chrono::duration_cast<milliseconds>(now - start).count();
  return std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100) + " s";
}

// The request part of a MemberIo, for one send of it.
std::shared_ptr<MemberIo> CopyRequest(const MemberIo& io) {
  auto copy = std::make_shared<MemberIo>();
  copy->op = io.op;
  copy->offset = io.offset;
  copy->length = io.length;
  copy->data = io.data;
  copy->fua = io.fua;
  copy->may_trim = io.may_trim;
  copy->fast_zero = io.fast_zero;
  return copy;
}

bool IsPowerOfTwo(unsigned n) {
  return n != 0 && (n & (n - 1)) == 0;
}

}  // namespace

std::string_view MemberStateName(NbdMember::State state) {
  switch (state) {
    case NbdMember::State::kConnecting:
      return "connecting";
    case NbdMember::State::kReady:
      return "ready";
    case NbdMember::State::kReconnecting:
      return "reconnecting";
    case NbdMember::State::kFailed:
      return "failed";
  }
  return "?";
}

NbdMember::NbdMember(asio::io_context& io, std::string uri, unsigned connections,
                     TransactionOptions options, MemberTls tls)
    : NbdMember(io, std::make_unique<DefaultMemberEnv>(io), nullptr, std::move(uri), connections,
                options, std::move(tls)) {}

NbdMember::NbdMember(asio::io_context& io, MemberEnv& env, std::string uri, unsigned connections,
                     TransactionOptions options, MemberTls tls)
    : NbdMember(io, nullptr, &env, std::move(uri), connections, options, std::move(tls)) {}

NbdMember::NbdMember(asio::io_context& io, std::unique_ptr<MemberEnv> own_env, MemberEnv* env,
                     std::string uri, unsigned connections, TransactionOptions options,
                     MemberTls tls)
    : io_(io),
      own_env_(std::move(own_env)),
      env_(env != nullptr ? *env : *own_env_),
      uri_(std::move(uri)),
      wanted_connections_(std::max(connections, 1u)),
      options_(options),
      tls_(std::move(tls)),
      session_(NewSession()),
      tick_timer_(env_.NewTimer()),
      connect_timer_(env_.NewTimer()) {}

NbdMember::~NbdMember() {
  // Answers of the connections destroyed below find the lifetime ended; the
  // callers still get their one done.
  for (auto& [id, transaction] : transactions_) {
    if (transaction.ping) continue;
    asio::post(io_, [io = std::move(transaction.io)] { io->done(ENOTCONN); });
  }
}

ConnectPlan NbdMember::PlanFor(ConnectPlan::Fencing fencing) const {
  ConnectPlan plan;
  plan.fencing = fencing;
  plan.session = session_;
  plan.epoch = epoch_;
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

size_t NbdMember::MaxInFlight() const {
  return std::max(options_.max_in_flight, 1u);
}

// --- first connection -------------------------------------------------------

void NbdMember::AsyncConnect(std::function<void(Status)> done) {
  const auto fencing = options_.fencing == FencingMode::kOff ? ConnectPlan::Fencing::kNone
                                                             : ConnectPlan::Fencing::kProbe;
  connections_.push_back(NewConnection(fencing));
  // A connection drops its callback when destroyed, and connections never
  // outlive the member: capturing `this` is safe.
  connections_.front()->AsyncConnect([this, done = std::move(done)](Status status) mutable {
    OnFirstConnection(std::move(status), std::move(done));
  });
}

void NbdMember::OnFirstConnection(Status status, std::function<void(Status)> done) {
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
    last_error_ = "cannot fence (not a dst export node), and fencing is required";
    SetState(State::kFailed, last_error_);
    done(Status::Error(EPROTO, last_error_));
    return;
  }
  WarnIfSmallRequests();
  AddExtraConnections([this, done = std::move(done)] {
    last_activity_ = env_.Now();
    SetState(State::kReady, fenced_ ? "fenced, epoch 1" : "not fenced");
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
      uri_.c_str(), capabilities_.max_request, MaxInFlight());
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
    DispatchWaiting();
  }
}

// Transitions from the first connect are left to the caller, which reports
// start-up as a whole (one line when it fails).
void NbdMember::SetState(State state, const std::string& why) {
  if (state == state_) return;
  if (state_ != State::kConnecting)
    LOG_INFO("member %s: %s -> %s: %s", uri_.c_str(), std::string(MemberStateName(state_)).c_str(),
             std::string(MemberStateName(state)).c_str(), why.c_str());
  state_ = state;
}

// --- transactions -----------------------------------------------------------

void NbdMember::Submit(std::shared_ptr<MemberIo> io) {
  if (const int err = CheckRequest(*io); err != 0) {
    io->failure = "member " + uri_ + ": " + Describe(*io) + ": " + std::strerror(err);
    asio::post(io_, [io = std::move(io), err] { io->done(err); });
    return;
  }
  const uint64_t id = next_id_++;
  Transaction& transaction = transactions_[id];
  transaction.io = std::move(io);
  const Clock::time_point now = env_.Now();
  transaction.history.first_send = now;
  if (state_ == State::kFailed) {
    transaction.last_error = "member is failed: " + last_error_;
    Finish(id, EIO);
    return;
  }
  Dispatch(id, now);
}

// What libnbd would reject anyway, answered with the errno the volume layer
// can act on.
int NbdMember::CheckRequest(const MemberIo& io) const {
  const volume::MemberCapabilities& caps = capabilities_;
  switch (io.op) {
    case MemberOp::kRead:
      return io.length > caps.max_request ? EINVAL : 0;
    case MemberOp::kWrite:
      if (caps.read_only) return EROFS;
      return io.length > caps.max_request ? EINVAL : 0;
    case MemberOp::kTrim:
      return caps.read_only ? EROFS : 0;
    case MemberOp::kZero:
      if (caps.read_only) return EROFS;
      return io.fast_zero && !caps.can_fast_zero ? ENOTSUP : 0;
    case MemberOp::kBlockStatus:
      return caps.can_block_status ? 0 : ENOTSUP;
    case MemberOp::kFlush:
    case MemberOp::kCache:
      return 0;
  }
  return EINVAL;
}

// A new I/O is sent at once when nothing waits ahead of it and a connection
// has room; otherwise it waits its turn (its id is the newest: the queue
// stays in id order).
void NbdMember::Dispatch(uint64_t id, Clock::time_point now) {
  if (state_ == State::kReady && waiting_.empty()) {
    bool saturated = false;
    MemberConnection* connection = ConnectionFor(transactions_.at(id).io->op, &saturated);
    if (connection != nullptr) {
      Send(id, *connection, now);
      return;
    }
    waiting_.push_back(id);
    if (!saturated) StartReconnect("no usable connection");
    return;
  }
  waiting_.push_back(id);
  if (state_ == State::kReady) DispatchWaiting();
}

// Sends what waits, in order, while the connections have room. A resend
// whose delay has passed joins the queue at its place (ahead of newer I/O).
void NbdMember::DispatchWaiting() {
  const Clock::time_point now = env_.Now();
  PromoteDueResends(now);
  while (state_ == State::kReady && !waiting_.empty()) {
    const uint64_t id = waiting_.front();
    auto it = transactions_.find(id);
    if (it == transactions_.end() || it->second.in_flight) {  // finished meanwhile
      waiting_.pop_front();
      continue;
    }
    bool saturated = false;
    MemberConnection* connection = ConnectionFor(it->second.io->op, &saturated);
    if (connection == nullptr) {
      if (!saturated) StartReconnect("no usable connection");
      return;
    }
    waiting_.pop_front();
    Send(id, *connection, now);
  }
}

// Ids are given in submission order, so the queue's order is the original
// order; an I/O being resent is older than most that wait, and goes near the
// front.
void NbdMember::EnqueueWaiting(uint64_t id) {
  if (waiting_.empty() || waiting_.back() < id) {
    waiting_.push_back(id);
    return;
  }
  const auto at = std::lower_bound(waiting_.begin(), waiting_.end(), id);
  if (at == waiting_.end() || *at != id) waiting_.insert(at, id);
}

void NbdMember::PromoteDueResends(Clock::time_point now) {
  if (delayed_.empty()) return;
  size_t kept = 0;
  for (const uint64_t id : delayed_) {
    auto it = transactions_.find(id);
    if (it == transactions_.end() || it->second.in_flight) continue;  // finished meanwhile
    if (it->second.not_before > now)
      delayed_[kept++] = id;
    else
      EnqueueWaiting(id);
  }
  delayed_.resize(kept);
}

// The ready connection with room under the in-flight bound and the fewest
// I/Os in flight, among those that suit `op` (block status needs structured
// replies); nullptr if none, with *saturated set when a suitable connection
// is ready but full (the I/O then waits for room, not for a reconnect).
// A read counts a connection with structured replies as
// kStructuredReadPenalty I/Os busier: a simple answer is two receives in
// libnbd, a structured one four, so reads go to the others until their
// queues are that much deeper. Queues are still balanced beyond that, since
// libnbd finds the command an answer belongs to by walking the connection's
// list of commands in flight.
MemberConnection* NbdMember::ConnectionFor(MemberOp op, bool* saturated) {
  constexpr size_t kStructuredReadPenalty = 32;
  const size_t bound = MaxInFlight();
  MemberConnection* best = nullptr;
  size_t best_load = 0;
  for (const auto& connection : connections_) {
    if (!connection->ready()) continue;
    const bool structured = connection->structured_replies();
    if (op == MemberOp::kBlockStatus && !structured) continue;
    if (connection->in_flight() >= bound) {
      *saturated = true;
      continue;
    }
    const size_t load = connection->in_flight() +
                        (op == MemberOp::kRead && structured ? kStructuredReadPenalty : 0);
    // Ties go to the later connection: the first one is the structured one.
    if (best == nullptr || load <= best_load) {
      best = connection.get();
      best_load = load;
    }
  }
  return best;
}

void NbdMember::Send(uint64_t id, MemberConnection& connection, Clock::time_point now) {
  Transaction& transaction = transactions_.at(id);
  if (transaction.history.sends > 0) ++counters_.resends;
  ++transaction.history.sends;
  ++transaction.attempt;
  transaction.in_flight = true;
  transaction.sent_at = now;
  ++in_flight_;
  deadlines_.push_back({now + options_.io_timeout, id, transaction.attempt});

  std::shared_ptr<MemberIo> send = CopyRequest(*transaction.io);
  MemberIo* answered = send.get();  // alive while its own done runs
  send->done = [this, alive = lifetime_.Watch(), id, attempt = transaction.attempt,
                answered](int err) {
    if (!alive.expired()) OnAnswer(id, attempt, err, *answered);
  };
  connection.Submit(std::move(send));
}

void NbdMember::OnAnswer(uint64_t id, uint64_t attempt, int err, MemberIo& answered) {
  auto it = transactions_.find(id);
  // An answer to a send that timed out or whose connection was dropped: the
  // transaction has moved on (resent, or finished).
  if (it == transactions_.end() || !it->second.in_flight || it->second.attempt != attempt) return;
  Transaction& transaction = it->second;
  transaction.in_flight = false;
  --in_flight_;
  const Clock::time_point now = env_.Now();
  last_activity_ = now;
  if (transaction.ping) {
    if (err != 0) {
      OnSendFailed(id, err, std::string("keepalive ping failed: ") + std::strerror(err));
      return;
    }
    transactions_.erase(it);
    if (!waiting_.empty()) DispatchWaiting();
    return;
  }
  counters_.RecordLatency(now - transaction.sent_at);
  if (err == 0) {
    ++counters_.ios;
    const MemberOp op = transaction.io->op;
    if (op == MemberOp::kRead || op == MemberOp::kWrite) counters_.bytes += transaction.io->length;
    if (op == MemberOp::kBlockStatus) transaction.io->extents = std::move(answered.extents);
    if (!waiting_.empty()) DispatchWaiting();  // the next in line takes the room
    Finish(id, 0, /*post=*/false);             // saves a trip round the event loop per I/O
    return;
  }
  std::string cause;
  if (err == ENOTCONN) {
    cause = "connection lost";
    std::string why;
    if (SomeConnectionDied(&why)) cause = why;
  } else {
    ++counters_.errors;
    cause = std::string("member answered: ") + std::strerror(err);
  }
  OnSendFailed(id, err, std::move(cause));
}

void NbdMember::OnSendFailed(uint64_t id, int err, std::string cause) {
  Transaction& transaction = transactions_.at(id);
  if (transaction.ping) {  // it did its job; never resent
    transactions_.erase(id);
    if (ClassifyError(MemberOp::kRead, err) == ErrorAction::kReconnect) StartReconnect(cause);
    return;
  }
  transaction.last_error = std::move(cause);
  switch (ClassifyError(transaction.io->op, err)) {
    case ErrorAction::kFail:
      Finish(id, err);
      DispatchWaiting();
      return;
    case ErrorAction::kResend:
      Requeue(id, ResendDelay(options_, transaction.history.sends));
      DispatchWaiting();
      return;
    case ErrorAction::kReconnect: {
      const std::string why = transaction.last_error;
      Requeue(id, milliseconds(0));
      StartReconnect(why);
      return;
    }
  }
}

// Puts a transaction back in line, unless its budget is spent.
void NbdMember::Requeue(uint64_t id, milliseconds delay) {
  Transaction& transaction = transactions_.at(id);
  const Clock::time_point now = env_.Now();
  if (!MaySendAgain(options_, transaction.history, now)) {
    GiveUp(id);
    return;
  }
  transaction.not_before = now + delay;
  if (delay.count() > 0)
    delayed_.push_back(id);
  else
    EnqueueWaiting(id);
}

void NbdMember::GiveUp(uint64_t id) {
  Transaction& transaction = transactions_.at(id);
  transaction.last_error =
      "gave up after " + std::to_string(transaction.history.sends) + " attempts in " +
      SecondsSince(transaction.history.first_send, env_.Now()) + ": " + transaction.last_error;
  Finish(id, EIO);
}

void NbdMember::Finish(uint64_t id, int err, bool post) {
  auto node = transactions_.extract(id);
  Transaction& transaction = node.mapped();
  if (transaction.ping) return;
  if (err != 0) {
    ++counters_.failures;
    transaction.io->failure =
        "member " + uri_ + ": " + Describe(*transaction.io) + ": " + transaction.last_error;
  }
  if (post) {
    asio::post(io_, [io = std::move(transaction.io), err] { io->done(err); });
    return;
  }
  const std::shared_ptr<MemberIo> io = std::move(transaction.io);
  io->done(err);  // may submit more I/O to this member
}

void NbdMember::VisitWaiting(const std::function<bool(uint64_t, Transaction&)>& keep) {
  auto visit = [&](auto& queue) {
    size_t kept = 0;
    for (size_t i = 0; i < queue.size(); ++i) {
      const uint64_t id = queue[i];
      auto it = transactions_.find(id);
      if (it == transactions_.end() || it->second.in_flight) continue;
      if (keep(id, it->second)) queue[kept++] = id;
    }
    queue.resize(kept);
  };
  visit(waiting_);
  visit(delayed_);
}

void NbdMember::FailAllWaiting(const std::string& cause) {
  VisitWaiting([&](uint64_t id, Transaction& transaction) {
    transaction.last_error = cause;
    Finish(id, EIO);
    return false;
  });
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
  // Closing posts ENOTCONN answers for what was in flight; OnAnswer ignores
  // them (the transactions are no longer in flight).
  for (auto& connection : connections_)
    connection->Close();
  connections_.clear();
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
  ++counters_.reconnects;
  connect_failures_in_row_ = 0;
  last_activity_ = env_.Now();
  SetState(State::kReady, std::string(fenced_ ? "fenced" : "not fenced") + ", epoch " +
                              std::to_string(epoch_) + ", after " +
                              SecondsSince(unreachable_since_, last_activity_) + ", " +
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
    LOG_WARNING("member %s: reconnect attempt %u failed: %s", uri_.c_str(),
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
      "unreachable for " + SecondsSince(unreachable_since_, now) + ": " + last_error_;
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

// --- periodic work ----------------------------------------------------------

void NbdMember::ArmTick() {
  tick_timer_->Start(TickPeriod(options_), [this] {
    OnTick();
    ArmTick();
  });
}

void NbdMember::OnTick() {
  const Clock::time_point now = env_.Now();
  ExpireDeadlines(now);
  std::string why;
  if (state_ == State::kReady && SomeConnectionDied(&why)) StartReconnect(why);
  ExpireWaiting(now);
  // Checked between reconnect attempts too (they are up to backoff_max
  // apart), after the I/Os whose own budget is spent have given up.
  if (UnreachableTooLong(now)) FailUnreachable(now);
  DispatchWaiting();
  SendPings(now);
}

// Deadlines are in send order; answered sends are dropped from the front as
// well, so that the queue stays about as long as what is in flight.
void NbdMember::ExpireDeadlines(Clock::time_point now) {
  while (!deadlines_.empty()) {
    const Deadline deadline = deadlines_.front();
    auto it = transactions_.find(deadline.id);
    const bool pending =
        it != transactions_.end() && it->second.in_flight && it->second.attempt == deadline.attempt;
    if (pending && deadline.at > now) break;
    deadlines_.pop_front();
    if (!pending) continue;  // answered, or already being resent
    ++counters_.timeouts;
    it->second.in_flight = false;
    --in_flight_;
    OnSendFailed(deadline.id, ETIMEDOUT,
                 "no answer within " + FormatDuration(options_.io_timeout) + " to " +
                     (it->second.ping ? std::string("keepalive ping") : Describe(*it->second.io)));
  }
}

// An I/O waiting to be sent (for room, a connection or its resend delay)
// still has a budget, counted from its submission.
void NbdMember::ExpireWaiting(Clock::time_point now) {
  VisitWaiting([&](uint64_t id, Transaction& transaction) {
    if (MaySendAgain(options_, transaction.history, now)) return true;
    GiveUp(id);
    return false;
  });
}

// At idle, one small read per connection proves the member still answers;
// with I/O in flight, deadlines do that.
void NbdMember::SendPings(Clock::time_point now) {
  if (state_ != State::kReady || options_.keepalive.count() == 0 || in_flight_ > 0 ||
      now - last_activity_ < options_.keepalive)
    return;
  last_activity_ = now;
  for (const auto& connection : connections_) {
    if (!connection->ready()) continue;
    const uint64_t id = next_id_++;
    Transaction& ping = transactions_[id];
    ping.ping = true;
    ping.history.first_send = now;
    ping.ping_buffer.resize(std::max<uint32_t>(capabilities_.min_block, 1));
    ping.io = std::make_shared<MemberIo>();
    ping.io->op = MemberOp::kRead;
    ping.io->length = ping.ping_buffer.size();
    ping.io->data = ping.ping_buffer.data();
    ++counters_.pings;
    Send(id, *connection, now);
  }
}

bool NbdMember::SomeConnectionDied(std::string* why) const {
  for (const auto& connection : connections_) {
    if (!connection->dead()) continue;
    *why = "connection lost: " + connection->last_error();
    return true;
  }
  return false;
}

Status NbdMember::ConnectAll(asio::io_context& io, std::vector<std::unique_ptr<NbdMember>>& members,
                             milliseconds timeout) {
  // Shared with the callbacks, which may run after we return (on timeout).
  struct Progress {
    size_t pending = 0;
    std::vector<std::optional<Status>> results;
  };
  auto progress = std::make_shared<Progress>();
  progress->pending = members.size();
  progress->results.resize(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    members[i]->AsyncConnect([progress, i](Status status) {
      progress->results[i] = std::move(status);
      --progress->pending;
    });
  }
  const RunResult run = RunUntil(
      io, [&progress] { return progress->pending == 0; }, timeout);
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
