#include "aggregator/member/nbd_member.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <utility>

#include "common/duration.h"
#include "common/log.h"

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
      log_name_(uri_),
      wanted_connections_(std::max(connections, 1u)),
      options_(options),
      tls_(std::move(tls)),
      session_(options.fence_session.empty() ? NewSession() : options.fence_session),
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

size_t NbdMember::MaxInFlight() const {
  return std::max(options_.max_in_flight, 1u);
}

// --- transactions -----------------------------------------------------------

// One send of a transaction: the copy of the request, and what its answer
// needs to find the transaction, in one allocation; its callback captures
// only a pointer to it, which std::function keeps without allocating.
struct NbdMember::SendIo : MemberIo {
  NbdMember* member = nullptr;
  LifetimeWatch alive;
  uint64_t id = 0;
  uint64_t attempt = 0;
};

void NbdMember::Submit(std::shared_ptr<MemberIo> io) {
  if (const int err = CheckRequest(*io); err != 0) {
    io->failure = "member " + log_name_ + ": " + Describe(*io) + ": " + std::strerror(err);
    asio::post(io_, [io = std::move(io), err] { io->done(err); });
    return;
  }
  const uint64_t id = next_id_++;
  Transaction& transaction = NewTransaction(id);
  transaction.io = std::move(io);
  const Clock::time_point now = env_.Now();
  transaction.history.first_send = now;
  if (state_ == State::kFailed || abandoned_) {
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
      if (caps.read_only || superseded_) return EROFS;
      return io.length > caps.max_request ? EINVAL : 0;
    case MemberOp::kTrim:
      return caps.read_only || superseded_ ? EROFS : 0;
    case MemberOp::kZero:
      if (caps.read_only || superseded_) return EROFS;
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

  std::shared_ptr<SendIo> send = volume::CopyRequest<SendIo>(*transaction.io);
  send->member = this;
  send->alive = lifetime_.Watch();
  send->id = id;
  send->attempt = transaction.attempt;
  SendIo* answered = send.get();  // alive while its own done runs
  send->done = [answered](int err) {
    if (!answered->alive.expired())
      answered->member->OnAnswer(answered->id, answered->attempt, err, *answered);
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
      const std::string what = id == fence_probe_ ? "" : "keepalive ping failed: ";
      OnSendFailed(id, err, what + std::strerror(err));
      return;
    }
    transactions_.erase(it);
    if (id == fence_probe_) {
      OnFenceProbeAnswer(0, "");
      return;
    }
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
  if (MayBeNewerOwnersFence(transaction, err)) {
    ++counters_.errors;
    if (superseded_)
      BecomeSuperseded(id);
    else
      HoldForFenceProbe(id, now);
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

// The member's own epoch only rises after its connections are dropped, and
// answers of dropped connections never get here: an ESHUTDOWN on a current
// connection is someone else's newer epoch in the shared session, or nbdkit
// stopping (it answers whatever is in flight with ESHUTDOWN).
bool NbdMember::MayBeNewerOwnersFence(const Transaction& transaction, int err) const {
  const MemberOp op = transaction.io->op;
  return err == ESHUTDOWN && fenced_ && options_.fence_epoch_base != 0 &&
         (op == MemberOp::kWrite || op == MemberOp::kTrim || op == MemberOp::kZero);
}

// The plugin fences writes only: a fenced connection still serves a read,
// a stopping nbdkit fails it (ESHUTDOWN) or closes. One probe answers for
// every I/O held meanwhile.
void NbdMember::HoldForFenceProbe(uint64_t id, Clock::time_point now) {
  transactions_.at(id).last_error = "member answered ESHUTDOWN";
  fence_suspects_.push_back(id);
  if (fence_probe_ != 0) return;
  for (const auto& connection : connections_) {
    if (!connection->ready()) continue;
    fence_probe_ = SendPing(*connection, now);
    return;
  }
  const std::string cause = "member answered ESHUTDOWN and has no connection left to ask";
  ReleaseFenceSuspects(/*fenced=*/false, cause);
  StartReconnect(cause);
}

// The probe's transaction is gone already; `cause` says why it failed.
void NbdMember::OnFenceProbeAnswer(int err, const std::string& cause) {
  fence_probe_ = 0;
  if (err == 0) {
    ReleaseFenceSuspects(/*fenced=*/true, "");
    return;
  }
  const std::string why =
      "member answered ESHUTDOWN, then a read failed (" + cause + "): the export node is stopping";
  ReleaseFenceSuspects(/*fenced=*/false, why);
  StartReconnect(why);
}

void NbdMember::ReleaseFenceSuspects(bool fenced, const std::string& cause) {
  std::vector<uint64_t> ids = std::move(fence_suspects_);
  fence_suspects_.clear();
  std::sort(ids.begin(), ids.end());  // resent or failed in submission order
  for (const uint64_t id : ids) {
    if (!transactions_.contains(id)) continue;
    if (fenced) {
      BecomeSuperseded(id);
      continue;
    }
    transactions_.at(id).last_error = cause;
    Requeue(id, milliseconds(0));
  }
}

void NbdMember::BecomeSuperseded(uint64_t id) {
  transactions_.at(id).last_error = "fenced by a newer owner";
  if (!superseded_) {
    superseded_ = true;
    LOG_WARNING("member %s: fenced by a newer owner: no more writes", log_name_.c_str());
    if (on_superseded_) on_superseded_();
  }
  Finish(id, EROFS);
  DispatchWaiting();
}

void NbdMember::OnSendFailed(uint64_t id, int err, std::string cause) {
  Transaction& transaction = transactions_.at(id);
  if (transaction.ping) {  // it did its job; never resent
    transactions_.erase(id);
    if (id == fence_probe_) {
      OnFenceProbeAnswer(err, cause);
      return;
    }
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
      FormatElapsed(transaction.history.first_send, env_.Now()) + ": " + transaction.last_error;
  Finish(id, EIO);
}

void NbdMember::Finish(uint64_t id, int err, bool post) {
  auto node = transactions_.extract(id);
  Transaction& transaction = node.mapped();
  if (transaction.ping) return;
  if (err != 0) {
    ++counters_.failures;
    transaction.io->failure =
        "member " + log_name_ + ": " + Describe(*transaction.io) + ": " + transaction.last_error;
  }
  std::shared_ptr<MemberIo> io = std::move(transaction.io);
  Recycle(std::move(node));
  if (post) {
    asio::post(io_, [io = std::move(io), err] { io->done(err); });
    return;
  }
  io->done(err);  // may submit more I/O to this member
}

NbdMember::Transaction& NbdMember::NewTransaction(uint64_t id) {
  if (spare_transactions_.empty()) return transactions_[id];
  Transactions::node_type node = std::move(spare_transactions_.back());
  spare_transactions_.pop_back();
  node.key() = id;
  return transactions_.insert(std::move(node)).position->second;
}

void NbdMember::Recycle(Transactions::node_type node) {
  // As many as a deep queue finishes in one batch of answers, and no more.
  constexpr size_t kMaxSpare = 128;
  if (spare_transactions_.size() >= kMaxSpare) return;
  node.mapped() = Transaction{};
  spare_transactions_.push_back(std::move(node));
}

// Everything the member holds fails now, whether waiting, delayed or in
// flight (what the connections still answer for it finds no transaction).
void NbdMember::Abandon(const std::string& why) {
  if (abandoned_) return;
  abandoned_ = true;
  LOG_WARNING("member %s abandoned: %s", log_name_.c_str(), why.c_str());
  last_error_ = "abandoned: " + why;
  std::vector<uint64_t> ids;
  ids.reserve(transactions_.size());
  for (const auto& [id, transaction] : transactions_)
    ids.push_back(id);
  std::sort(ids.begin(), ids.end());  // done in submission order
  for (const uint64_t id : ids) {
    transactions_.at(id).last_error = last_error_;
    Finish(id, EIO);
  }
  in_flight_ = 0;
  waiting_.clear();
  delayed_.clear();
  deadlines_.clear();
  fence_suspects_.clear();
  fence_probe_ = 0;
  // While the first connection is being made, its completion reports the
  // failure to AsyncConnect's caller (OnFirstConnection) and closes then.
  if (state_ == State::kConnecting) return;
  CloseForGood();
}

void NbdMember::CloseForGood() {
  ++generation_;  // a reconnect in progress recognises itself as stale
  tick_timer_->Cancel();
  connect_timer_->Cancel();
  reconnecting_.reset();
  for (auto& connection : connections_)
    connection->Close();
  connections_.clear();
  CountConnections();
  extras_.clear();
  state_ = State::kFailed;
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

// --- periodic work ----------------------------------------------------------

void NbdMember::ArmTick() {
  tick_timer_->Start(TickPeriod(options_), [this] {
    OnTick();
    if (!abandoned_) ArmTick();
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
  for (const auto& connection : connections_)
    if (connection->ready()) SendPing(*connection, now);
}

uint64_t NbdMember::SendPing(MemberConnection& connection, Clock::time_point now) {
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
  Send(id, connection, now);
  return id;
}

bool NbdMember::SomeConnectionDied(std::string* why) const {
  for (const auto& connection : connections_) {
    if (!connection->dead()) continue;
    *why = "connection lost: " + connection->last_error();
    return true;
  }
  return false;
}

}  // namespace dst::member
