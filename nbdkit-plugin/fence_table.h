// Fencing of resent writes (docs/transactions.md): the aggregator resends a member
// write on a new connection when the old one timed out, and a stale first copy
// still queued on this node must never land after the resend.
//
// Every fenced connection names a session (one aggregator's connections to one
// export) and an epoch, in its export name: NAME@dst-fence:SESSION:EPOCH
// (ParseFencedName). Per (export, session) the FenceTable keeps the current
// epoch, and counts the mutating requests (write, trim, zero) of each epoch
// that are running:
//   - Join with an epoch older than the current one is refused (ESTALE).
//   - Join with a newer epoch makes it current at once, so that requests of
//     older epochs that have not started are refused from then on
//     (BeginMutation returns false), and waits until the older ones that had
//     started have finished (ETIMEDOUT after `wait`; the epoch stays raised).
//     A join of the current epoch waits for the same thing, so that no
//     connection of the new epoch writes while an old write can still land.
//   - A join superseded by an even newer epoch while it waits is refused
//     (ESTALE): its connection could never write.
//   - A newer epoch may exceed the current one by at most MaxEpochJump():
//     2^20, plus 2^10 for every second since the epoch last rose (ERANGE
//     beyond that). An aggregator raises its epoch by one per reconnect
//     attempt, at most ten a second, so it never comes near the bound, even
//     after a partition of years; a client that jumps to 2^63-1 to lock the
//     session for good cannot. A session new to the table (after a restart
//     of the node, or an eviction) takes whatever epoch comes first.
//   - A new owner is the exception (IsNewOwner): the aggregators of a mirror
//     or raid10 volume share each member's session, and their epoch is
//     OWNERSHIP << 32 | ATTEMPT. An epoch whose high half is above the
//     current one's by 1 to kMaxOwnerJump, with a low half of at most
//     kEpochJumpBase, is a newer aggregator taking the volume over, and is
//     accepted whatever the time-based bound says.
// The current epoch of a session is kept while it has connections and after;
// at most max_sessions are kept, and beyond that the sessions that lost their
// last connection longest ago are forgotten (sessions with connections are
// never forgotten, so the bound can be exceeded when every session is in
// use). Joining and leaving cost O(1) in the number of sessions either way.
//
// Session ids are capabilities: whoever knows one can fence its aggregator
// out. They never appear in messages; SessionFingerprint() stands for them.
//
// Plain C++, no nbdkit. Thread-safe: every member may be called from any
// thread at once. A Ticket belongs to one connection; BeginMutation and
// EndMutation on it may run on many threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"

namespace dst::plugin {

// What a client asked for, split into the export name and the fence.
struct FencedName {
  std::string name;  // the export name proper ("" = the default export)
  bool fenced = false;
  std::string session;     // 32 lowercase hex characters, when fenced
  uint64_t epoch = 0;      // in [1, 2^63), when fenced
  std::string epoch_text;  // the epoch as the client wrote it, echoed back
};

inline constexpr std::string_view kFenceMarker = "@dst-fence:";

// Splits `requested` at the last "@dst-fence:". Without the marker the whole
// name is the export name, unfenced. With it, what follows must be
// SESSION:EPOCH, or the result is EINVAL naming the bad part (a session only
// by its length).
Status ParseFencedName(std::string_view requested, FencedName* out);

// `requested` fit for a log line: the name, and any fence suffix as
// "@dst-fence:<redacted>".
std::string RedactedExportName(std::string_view requested);

// "#" and the first 8 hex digits of the BLAKE2b-256 digest of the session id
// (`printf %s SESSION | b2sum -l 256 | cut -c1-8`): tells sessions apart in
// logs without telling anyone the id.
std::string SessionFingerprint(std::string_view session);

// "dst-fence SESSION EPOCH": the export description of a fenced connection,
// which tells the client that this server understood the fence.
std::string FenceConfirmation(const FencedName& name);

class FenceTable {
  struct Session;

 public:
  static constexpr size_t kDefaultMaxSessions = 4096;
  static constexpr uint64_t kEpochJumpBase = uint64_t{1} << 20;
  static constexpr uint64_t kEpochJumpPerSecond = uint64_t{1} << 10;
  // How many ownership epochs one join may skip as a new owner.
  static constexpr uint64_t kMaxOwnerJump = uint64_t{1} << 16;
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // How far above the current epoch a join may go, `since_raised` after the
  // current epoch was set.
  static uint64_t MaxEpochJump(std::chrono::steady_clock::duration since_raised);
  // Whether `epoch` is a new owner's first epochs over `current`: high half
  // above current's by 1 to kMaxOwnerJump, low half at most kEpochJumpBase.
  static bool IsNewOwner(uint64_t current, uint64_t epoch);

  // One connection's membership of a session, from a successful Join until
  // Leave. Default-constructed: no membership (an unfenced connection).
  class Ticket {
   public:
    Ticket() = default;
    bool valid() const { return session_ != nullptr; }
    uint64_t epoch() const { return epoch_; }
    // The session's epoch before this join; 0 for a session new to the table.
    uint64_t previous_epoch() const { return previous_epoch_; }
    // How long Join waited for requests of older epochs.
    std::chrono::milliseconds waited() const { return waited_; }

   private:
    friend class FenceTable;
    std::shared_ptr<Session> session_;
    uint64_t epoch_ = 0;
    uint64_t previous_epoch_ = 0;
    std::chrono::milliseconds waited_{0};
  };

  // `clock` is what the epoch bound measures time with (tests pass their own).
  explicit FenceTable(size_t max_sessions = kDefaultMaxSessions,
                      Clock clock = std::chrono::steady_clock::now)
      : max_sessions_(max_sessions), clock_(std::move(clock)) {}
  FenceTable(const FenceTable&) = delete;
  FenceTable& operator=(const FenceTable&) = delete;

  // Joins a connection of `epoch` to (export_name, session), under the rules
  // above; *out is valid only on success. Errors: ESTALE (older than current,
  // or superseded while waiting), ERANGE (too far above current), ETIMEDOUT
  // (older requests still running after `wait`), EINVAL (epoch 0). Messages
  // start with "export 'NAME': fence: session #FINGERPRINT: ".
  Status Join(std::string_view export_name, std::string_view session, uint64_t epoch,
              std::chrono::milliseconds wait, Ticket* out);

  // Called before a mutating request: false (and *current = the session's
  // epoch) if the ticket's epoch is no longer current; otherwise the request
  // is counted as running until EndMutation. An invalid ticket (unfenced
  // connection) is always admitted and never counted.
  bool BeginMutation(const Ticket& ticket, uint64_t* current = nullptr);
  void EndMutation(const Ticket& ticket);

  // Ends the connection's membership and resets *ticket. Its session's epoch
  // is remembered.
  void Leave(Ticket* ticket);

  // For tests and logs: the current epoch of a session the table holds.
  std::optional<uint64_t> CurrentEpoch(std::string_view export_name,
                                       std::string_view session) const;
  size_t session_count() const;

 private:
  static std::string Key(std::string_view export_name, std::string_view session);
  std::shared_ptr<Session> Pin(std::string_view export_name, std::string_view session);
  void Unpin(const std::shared_ptr<Session>& session);
  void EvictIdle();
  Status Raise(Session& s, uint64_t epoch) const;
  static Status WaitForOlder(Session& s, std::unique_lock<std::mutex>& lock, uint64_t epoch,
                             std::chrono::milliseconds wait);

  const size_t max_sessions_;
  const Clock clock_;
  mutable std::mutex mu_;  // guards sessions_, idle_ and Session::connections/idle
  std::unordered_map<std::string, std::shared_ptr<Session>> sessions_;
  // Keys of the sessions without connections, in the order they lost their
  // last one: least recently used first.
  std::list<std::string> idle_;
};

// Counts one mutating request as running for as long as it lives, if its
// connection's epoch is current; admitted() says whether it is.
class MutationGuard {
 public:
  MutationGuard(FenceTable& table, const FenceTable::Ticket& ticket)
      : table_(table), ticket_(ticket), admitted_(table.BeginMutation(ticket, &current_)) {}
  ~MutationGuard() {
    if (admitted_) table_.EndMutation(ticket_);
  }
  MutationGuard(const MutationGuard&) = delete;
  MutationGuard& operator=(const MutationGuard&) = delete;

  bool admitted() const { return admitted_; }
  // The session's epoch, when not admitted.
  uint64_t current_epoch() const { return current_; }

 private:
  FenceTable& table_;
  const FenceTable::Ticket& ticket_;
  uint64_t current_ = 0;
  bool admitted_;
};

}  // namespace dst::plugin
