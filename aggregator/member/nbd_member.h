// NbdMember: a volume member reached at an NBD URI (nbd://host:port/export,
// nbd+unix:///export?socket=PATH, or their TLS forms nbds://, nbds+unix://)
// through one or more NbdConnections, with DST transaction semantics
// (docs/transactions.md).
//
// Contract:
// - AsyncConnect() makes the first connection: one attempt, no retries (a
//   member that is unreachable at start is a configuration error). If the
//   server advertises multi-conn it opens up to `connections` in total.
//   With fencing kAuto/kRequire it asks the dst plugin to fence; kRequire
//   fails a member that cannot. A member whose maximum request is under
//   64 KiB is accepted, with one warning.
// - Submit() turns each MemberIo into a transaction: sent on the ready
//   connection with the fewest I/Os in flight, with a deadline (io_timeout)
//   that starts when it is sent. At most options.max_in_flight I/Os are in
//   flight on one connection; the others wait, and are sent in the order they
//   were submitted as answers make room (I/Os being resent go first).
//   A timeout or a lost connection drops every connection, and the member
//   reconnects with exponential backoff under a new fencing epoch; every
//   I/O that was in flight is resent once the member is ready again, within
//   the same bound. A transient error answer (EIO) is resent after a backoff
//   delay on the same connections. Only when an I/O's budget (retries,
//   retry_window, counted from its submission) is spent does it fail, with
//   EIO, and io->failure says why.
// - Deterministic errors fail at once with their errno: EINVAL for a read
//   or write longer than capabilities().max_request, EROFS for a write, trim
//   or zero on a read-only export, ENOTSUP for fast_zero or block status that
//   the export did not advertise, and error answers such as ENOSPC.
// - A member that comes back with another size, other flags or without
//   fencing it had is refused: state kFailed, its waiting I/Os fail, and it
//   keeps being probed every backoff_max. A member that stays unreachable
//   for retry_window also becomes kFailed; new I/O then fails at once with
//   EIO until it is back.
// - done is called exactly once per MemberIo, from the io_context, never from
//   inside Submit(): at once for an answer (handled at the end of a socket
//   event), posted otherwise.
// - Time, timers and connections come from a MemberEnv (member_env.h): by
//   default the real ones; the unit tests of these rules inject a manual
//   clock and scripted connections. The io_context and the environment must
//   outlive the member. Destroying the member fails the I/Os not yet done
//   (their done still runs, with ENOTCONN).
// - Abandon(why) (the volume gave up on this member: a demoted copy) logs
//   `member URI abandoned: WHY`, fails every queued, delayed and in-flight
//   I/O with EIO at once, closes the connections and leaves the member
//   kFailed for good: every later Submit() fails with EIO (posted), and it
//   never reconnects. Abandoned while its first connection is being made,
//   AsyncConnect's done gets the failure.
// - With options.fence_epoch_base set (a mirror or raid10 member), an
//   ESHUTDOWN answer to a write, trim or zero on a fenced connection means
//   either that another aggregator joined the session with a newer epoch, or
//   that the export node is stopping (nbdkit answers everything in flight
//   with ESHUTDOWN on SIGTERM). The member holds that I/O and asks with one
//   read (a fence probe): a fenced connection stays open and serves reads,
//   a stopping node fails the read or closes. Read answered: the member is
//   superseded. It logs `member URI: fenced by a newer owner: no more
//   writes`, calls the OnSuperseded callback (before the I/O completes), fails
//   the held I/Os and every later write, trim and zero with EROFS at once,
//   and never resends them. Reads go on while the member answers them.
//   Read failed (or lost with the connection): the held I/Os are resent
//   after a reconnect, as for any lost connection.
// - Logs name the member by its URI and never show the fencing session.
//
// Threading: not thread-safe; every call, the environment and the io_context
// run on one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "aggregator/member/member_connection.h"
#include "aggregator/member/member_env.h"
#include "aggregator/member/member_stats.h"
#include "aggregator/member/member_tls.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/volume/member_io.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::member {

class NbdMember : public volume::MemberTarget {
 public:
  enum class State : uint8_t { kConnecting, kReady, kReconnecting, kFailed };

  // `tls`: the credentials of a TLS member (nbds://, nbds+unix://), used on
  // every connection, reconnects included. Real time and libnbd connections.
  NbdMember(asio::io_context& io, std::string uri, unsigned connections,
            TransactionOptions options = {}, MemberTls tls = {});
  // The same over `env`'s time, timers and connections.
  NbdMember(asio::io_context& io, MemberEnv& env, std::string uri, unsigned connections,
            TransactionOptions options = {}, MemberTls tls = {});
  ~NbdMember() override;
  NbdMember(const NbdMember&) = delete;
  NbdMember& operator=(const NbdMember&) = delete;

  // `done` gets Ok once the member can take I/O, else the first connection's
  // error (without the URI; ConnectAll adds it). Call at most once.
  void AsyncConnect(std::function<void(Status)> done);

  const volume::MemberCapabilities& capabilities() const override { return capabilities_; }
  const std::string& name() const override { return uri_; }
  // What its log lines and failure messages call it: its URI, unless set. A loop's copy of a
  // member adds its loop (aggregator/loop_volumes.h), so that several loops' lines tell apart.
  void SetLogName(std::string log_name) { log_name_ = std::move(log_name); }
  void Submit(std::shared_ptr<volume::MemberIo> io) override;
  void Abandon(const std::string& why) override;

  // The state, the counts below and the counters may be read from another thread (status on the
  // home loop reads the members each event loop has of its own); the rest only on the member's.
  State state() const { return state_; }
  bool abandoned() const { return abandoned_; }
  // The server confirmed fencing (the dst plugin); valid once connected.
  bool fenced() const { return fenced_; }
  // The fence epoch of the current connections: options.fence_epoch_base
  // plus the member's own count (1 for the first connection).
  uint64_t epoch() const { return options_.fence_epoch_base + epoch_; }
  // A newer owner fenced this member out (see the contract).
  bool superseded() const { return superseded_; }
  // Called once, when the member becomes superseded.
  void OnSuperseded(std::function<void()> callback) { on_superseded_ = std::move(callback); }
  const MemberCounters& counters() const { return counters_; }
  // Connections in use, and member I/Os sent and not yet answered.
  size_t connection_count() const { return connections_in_use_; }
  size_t in_flight() const { return in_flight_; }
  // Member I/Os waiting to be sent: for a connection, for room under the
  // in-flight bound, or for a resend delay.
  size_t waiting() const { return waiting_.size() + delayed_.size(); }

  // Start-up helper: runs `io` until every member is connected or has failed,
  // or until `timeout` of real time (whatever the members' environment).
  // Returns Ok, or the first failure in `members` order as "member URI:
  // message" (ETIMEDOUT for a member still connecting).
  static Status ConnectAll(asio::io_context& io, std::vector<std::unique_ptr<NbdMember>>& members,
                           std::chrono::milliseconds timeout);

 private:
  // One MemberIo on its way through the member; resendable.
  struct Transaction {
    std::shared_ptr<volume::MemberIo> io;  // the caller's (or the ping's own)
    SendHistory history;
    Clock::time_point sent_at;
    Clock::time_point not_before;  // earliest next send, after a transient error
    uint64_t attempt = 0;          // which send an answer belongs to
    bool in_flight = false;
    bool ping = false;
    std::string last_error;
    std::vector<uint8_t> ping_buffer;
  };
  using Transactions = std::unordered_map<uint64_t, Transaction>;
  // One send of a transaction (nbd_member.cc).
  struct SendIo;
  struct Deadline {
    Clock::time_point at;
    uint64_t id;
    uint64_t attempt;
  };

  // `env`, or else `own_env`.
  NbdMember(asio::io_context& io, std::unique_ptr<MemberEnv> own_env, MemberEnv* env,
            std::string uri, unsigned connections, TransactionOptions options, MemberTls tls);

  ConnectPlan PlanFor(ConnectPlan::Fencing fencing) const;
  std::unique_ptr<MemberConnection> NewConnection(ConnectPlan::Fencing fencing);
  void OnFirstConnection(Status status, std::function<void(Status)> done);
  void WarnIfSmallRequests() const;
  void AddExtraConnections(std::function<void()> all_done);
  void AdoptExtraConnection(MemberConnection* connection, const Status& status);
  void SetState(State state, const std::string& why);
  // After every change of connections_.
  void CountConnections() { connections_in_use_ = connections_.size(); }

  // Transactions.
  // `now`: the caller's clock reading, one per I/O on the hot path.
  void Dispatch(uint64_t id, Clock::time_point now);
  void DispatchWaiting();
  void EnqueueWaiting(uint64_t id);
  void PromoteDueResends(Clock::time_point now);
  void Send(uint64_t id, MemberConnection& connection, Clock::time_point now);
  void OnAnswer(uint64_t id, uint64_t attempt, int err, volume::MemberIo& answered);
  void OnSendFailed(uint64_t id, int err, std::string cause);
  void Requeue(uint64_t id, std::chrono::milliseconds delay);
  // `post`: run done later from the event loop rather than now; only an
  // answer (OnAnswer runs outside Submit and libnbd) may run it at once.
  void Finish(uint64_t id, int err, bool post = true);
  // The entry of a new transaction, in the node of a finished one when there
  // is one: a transaction per I/O, without an allocation per I/O.
  Transaction& NewTransaction(uint64_t id);
  void Recycle(Transactions::node_type node);
  void GiveUp(uint64_t id);
  // An ESHUTDOWN answer to a mutating I/O of a member of a redundant volume:
  // a newer owner's fence, or a stopping export node.
  bool MayBeNewerOwnersFence(const Transaction& transaction, int err) const;
  // Holds `id` until the fence probe (one read) tells the two apart.
  void HoldForFenceProbe(uint64_t id, Clock::time_point now);
  void OnFenceProbeAnswer(int err, const std::string& cause);
  // The held I/Os: superseded (the probe was answered) or resent.
  void ReleaseFenceSuspects(bool fenced, const std::string& cause);
  void BecomeSuperseded(uint64_t id);
  void FailAllWaiting(const std::string& cause);
  // Abandon's end of the connections: closes them and stops every timer.
  void CloseForGood();
  int CheckRequest(const volume::MemberIo& io) const;
  MemberConnection* ConnectionFor(volume::MemberOp op, bool* saturated);

  // Reconnection, keepalive, deadlines: driven by one periodic tick.
  void StartReconnect(const std::string& cause);
  void DropConnections(const std::string& cause);
  void ScheduleConnectAttempt(std::chrono::milliseconds delay);
  void AttemptConnect();
  void OnReconnectResult(uint64_t generation, Status status);
  void OnReconnectFailed(const std::string& message, bool refused);
  Status CheckIdentity(const MemberConnection& connection) const;
  bool UnreachableTooLong(Clock::time_point now) const;
  void FailUnreachable(Clock::time_point now);
  void ArmTick();
  void OnTick();
  void ExpireDeadlines(Clock::time_point now);
  void ExpireWaiting(Clock::time_point now);
  // Calls keep(id, transaction) for each I/O waiting to be sent (in order,
  // then those in their resend delay) and forgets those for which it returns
  // false (it gave them up); entries of finished I/Os are dropped too.
  void VisitWaiting(const std::function<bool(uint64_t id, Transaction& transaction)>& keep);
  size_t MaxInFlight() const;
  void SendPings(Clock::time_point now);
  // A ping transaction (a small read that proves the connection answers),
  // sent on `connection`; its id.
  uint64_t SendPing(MemberConnection& connection, Clock::time_point now);
  bool SomeConnectionDied(std::string* why) const;

  asio::io_context& io_;
  std::unique_ptr<MemberEnv> own_env_;  // the default one, unless injected
  MemberEnv& env_;
  const std::string uri_;
  std::string log_name_;
  const unsigned wanted_connections_;
  const TransactionOptions options_;
  const MemberTls tls_;
  const std::string session_;
  volume::MemberCapabilities capabilities_;
  bool fenced_ = false;
  std::atomic<State> state_ = State::kConnecting;
  bool abandoned_ = false;   // Abandon() was called: failed for good
  bool superseded_ = false;  // a newer owner fenced it: no more writes
  std::function<void()> on_superseded_;
  // Mutating I/Os answered ESHUTDOWN, held (neither in flight nor waiting)
  // until the fence probe's answer; 0: no probe in flight.
  std::vector<uint64_t> fence_suspects_;
  uint64_t fence_probe_ = 0;
  uint64_t epoch_ = 1;
  // Bumped whenever the connections are dropped: callbacks of older
  // connections recognise themselves and do nothing.
  uint64_t generation_ = 0;
  std::vector<std::unique_ptr<MemberConnection>> connections_;  // in use
  Counter connections_in_use_;  // connections_.size(), for readers on other threads
  std::vector<std::unique_ptr<MemberConnection>> extras_;  // still connecting
  std::unique_ptr<MemberConnection> reconnecting_;         // the attempt in progress
  unsigned connect_failures_in_row_ = 0;
  Clock::time_point unreachable_since_;
  std::string last_error_;

  uint64_t next_id_ = 1;
  Transactions transactions_;
  std::vector<Transactions::node_type> spare_transactions_;  // see NewTransaction
  // Ids to send when a connection has room, in id (submission) order; ids of
  // transactions finished meanwhile are skipped when met.
  std::deque<uint64_t> waiting_;
  std::vector<uint64_t> delayed_;   // ids waiting for their resend delay
  std::deque<Deadline> deadlines_;  // in send order, hence in deadline order
  Counter in_flight_;
  Clock::time_point last_activity_;
  MemberCounters counters_;

  std::unique_ptr<MemberTimer> tick_timer_;
  std::unique_ptr<MemberTimer> connect_timer_;
  // Answers of sends that may arrive after the member is gone check it.
  Lifetime lifetime_;
};

std::string_view MemberStateName(NbdMember::State state);

}  // namespace dst::member
