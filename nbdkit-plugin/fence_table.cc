#include "nbdkit-plugin/fence_table.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <limits>
#include <list>
#include <map>

#include "common/checksum.h"

namespace dst::plugin {

namespace {

constexpr size_t kSessionLength = 32;

bool IsSession(std::string_view text) {
  return text.size() == kSessionLength && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Digits only: from_chars alone would accept a leading '-' for signed types
// and stop silently at the first non-digit.
bool ParseEpoch(std::string_view text, uint64_t* epoch) {
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  if (value == 0 || value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return false;
  *epoch = value;
  return true;
}

std::string Quoted(std::string_view text) {
  return "'" + std::string(text) + "'";
}

// condition_variable::wait_for adds the duration to now(): keep it far from
// overflowing whatever a caller passes.
std::chrono::milliseconds ClampWait(std::chrono::milliseconds wait) {
  constexpr std::chrono::milliseconds kMax = std::chrono::hours(24 * 365);
  return std::clamp(wait, std::chrono::milliseconds(0), kMax);
}

}  // namespace

Status ParseFencedName(std::string_view requested, FencedName* out) {
  *out = FencedName{};
  const size_t at = requested.rfind(kFenceMarker);
  if (at == std::string_view::npos) {
    out->name = std::string(requested);
    return Status::Ok();
  }
  const std::string_view suffix = requested.substr(at + kFenceMarker.size());
  const size_t colon = suffix.find(':');
  if (colon == std::string_view::npos)
    return Status::Invalid("fence suffix of " + std::to_string(suffix.size()) +
                           " characters: expected SESSION:EPOCH after " +
                           std::string(kFenceMarker));
  const std::string_view session = suffix.substr(0, colon);
  const std::string_view epoch_text = suffix.substr(colon + 1);
  if (!IsSession(session))
    return Status::Invalid("fence session of " + std::to_string(session.size()) +
                           " characters: expected 32 lowercase hex characters");
  uint64_t epoch = 0;
  if (!ParseEpoch(epoch_text, &epoch))
    return Status::Invalid("fence epoch " + Quoted(epoch_text) +
                           ": expected a decimal integer from 1 to 2^63-1");
  out->name = std::string(requested.substr(0, at));
  out->fenced = true;
  out->session = std::string(session);
  out->epoch = epoch;
  out->epoch_text = std::string(epoch_text);
  return Status::Ok();
}

std::string FenceConfirmation(const FencedName& name) {
  return "dst-fence " + name.session + " " + name.epoch_text;
}

std::string RedactedExportName(std::string_view requested) {
  const size_t at = requested.rfind(kFenceMarker);
  if (at == std::string_view::npos) return std::string(requested);
  return std::string(requested.substr(0, at)) + std::string(kFenceMarker) + "<redacted>";
}

std::string SessionFingerprint(std::string_view session) {
  Checksummer::Result hasher = Checksummer::Create(ChecksumAlgorithm::kBlake2b);
  if (!hasher.ok()) return "#?";
  const Digest digest = hasher.checksummer->Compute(
      {reinterpret_cast<const uint8_t*>(session.data()), session.size()});
  return "#" + digest.ToHex().substr(0, 8);
}

// A steady_clock duration holds under 2^34 seconds, so the sum cannot
// overflow.
uint64_t FenceTable::MaxEpochJump(std::chrono::steady_clock::duration since_raised) {
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_raised).count();
  if (seconds <= 0) return kEpochJumpBase;
  return kEpochJumpBase + static_cast<uint64_t>(seconds) * kEpochJumpPerSecond;
}

bool FenceTable::IsNewOwner(uint64_t current, uint64_t epoch) {
  const uint64_t owner = epoch >> 32, current_owner = current >> 32;
  return owner > current_owner && owner - current_owner <= kMaxOwnerJump &&
         (epoch & 0xffffffffu) <= kEpochJumpBase;
}

struct FenceTable::Session {
  Session(std::string_view export_name, std::string_view id, std::string key)
      : export_name(export_name), fingerprint(SessionFingerprint(id)), key(std::move(key)) {}

  std::string Where() const {
    return "export '" + export_name + "': fence: session " + fingerprint;
  }

  const std::string export_name;
  const std::string fingerprint;  // never the id itself: see the header
  const std::string key;          // in FenceTable::sessions_

  // Guarded by FenceTable::mu_: a session with connections is never evicted;
  // one without is in FenceTable::idle_, at `idle`.
  uint64_t connections = 0;
  std::optional<std::list<std::string>::iterator> idle;

  std::mutex mu;
  std::condition_variable drained;  // an epoch's running count reached 0, or current rose
  uint64_t current = 0;             // guarded by mu
  std::chrono::steady_clock::time_point raised_at;  // guarded by mu: when current was set
  std::map<uint64_t, uint64_t> running;             // guarded by mu: epoch -> mutations running

  // Mutations still running from epochs before `epoch`. Needs mu.
  uint64_t RunningBefore(uint64_t epoch) const {
    uint64_t n = 0;
    for (auto it = running.begin(); it != running.end() && it->first < epoch; ++it)
      n += it->second;
    return n;
  }
};

Status FenceTable::Join(std::string_view export_name, std::string_view session, uint64_t epoch,
                        std::chrono::milliseconds wait, Ticket* out) {
  *out = Ticket{};
  if (epoch == 0)
    return Status::Invalid("export '" + std::string(export_name) + "': fence: session " +
                           SessionFingerprint(session) + ": epoch 0 is not valid");
  std::shared_ptr<Session> s = Pin(export_name, session);
  uint64_t previous = 0;
  const auto start = std::chrono::steady_clock::now();
  Status status;
  {
    std::unique_lock lock(s->mu);
    previous = s->current;
    status = Raise(*s, epoch);
    if (status.ok()) status = WaitForOlder(*s, lock, epoch, wait);
  }
  if (!status.ok()) {
    Unpin(s);
    return status;
  }
  out->session_ = std::move(s);
  out->epoch_ = epoch;
  out->previous_epoch_ = previous;
  out->waited_ = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return Status::Ok();
}

// Makes `epoch` current if it is newer and within the bound; the current
// epoch itself passes unchanged. Needs s.mu.
Status FenceTable::Raise(Session& s, uint64_t epoch) const {
  if (epoch < s.current)
    return Status::Error(ESTALE, s.Where() + ": epoch " + std::to_string(epoch) +
                                     " is older than current epoch " + std::to_string(s.current));
  if (epoch == s.current) return Status::Ok();
  const auto now = clock_();
  if (s.current != 0) {
    const uint64_t bound = MaxEpochJump(now - s.raised_at);
    if (epoch - s.current > bound && !IsNewOwner(s.current, epoch))
      return Status::Error(ERANGE, s.Where() + ": epoch " + std::to_string(epoch) +
                                       " is more than " + std::to_string(bound) +
                                       " above current epoch " + std::to_string(s.current));
  }
  s.current = epoch;
  s.raised_at = now;
  s.drained.notify_all();  // joins waiting for an older epoch are now superseded
  return Status::Ok();
}

// Waits, with s.mu held by `lock`, until no mutation of an epoch before
// `epoch` is running. Requests of those epochs can no longer start, so the
// count only goes down.
Status FenceTable::WaitForOlder(Session& s, std::unique_lock<std::mutex>& lock, uint64_t epoch,
                                std::chrono::milliseconds wait) {
  const bool done = s.drained.wait_for(
      lock, ClampWait(wait), [&] { return s.current != epoch || s.RunningBefore(epoch) == 0; });
  if (s.current != epoch)
    return Status::Error(ESTALE, s.Where() + ": epoch " + std::to_string(epoch) +
                                     " was superseded by epoch " + std::to_string(s.current) +
                                     " while waiting for requests of older epochs");
  if (!done)
    return Status::Error(ETIMEDOUT, s.Where() + ": epoch " + std::to_string(epoch) + ": " +
                                        std::to_string(s.RunningBefore(epoch)) +
                                        " write request(s) of older epochs still running after " +
                                        std::to_string(wait.count()) + " ms");
  return Status::Ok();
}

bool FenceTable::BeginMutation(const Ticket& ticket, uint64_t* current) {
  if (!ticket.valid()) return true;  // unfenced: nothing to check or count
  Session& s = *ticket.session_;
  std::lock_guard lock(s.mu);
  if (ticket.epoch_ < s.current) {
    if (current) *current = s.current;
    return false;
  }
  ++s.running[ticket.epoch_];
  return true;
}

void FenceTable::EndMutation(const Ticket& ticket) {
  if (!ticket.valid()) return;
  Session& s = *ticket.session_;
  std::lock_guard lock(s.mu);
  const auto it = s.running.find(ticket.epoch_);
  if (it == s.running.end()) return;  // unbalanced call: nothing to undo
  if (--it->second == 0) {
    s.running.erase(it);
    s.drained.notify_all();
  }
}

void FenceTable::Leave(Ticket* ticket) {
  if (!ticket->valid()) return;
  Unpin(ticket->session_);
  *ticket = Ticket{};
}

std::optional<uint64_t> FenceTable::CurrentEpoch(std::string_view export_name,
                                                 std::string_view session) const {
  std::shared_ptr<Session> s;
  {
    std::lock_guard lock(mu_);
    const auto it = sessions_.find(Key(export_name, session));
    if (it == sessions_.end()) return std::nullopt;
    s = it->second;
  }
  std::lock_guard lock(s->mu);
  return s->current;
}

size_t FenceTable::session_count() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

// The session id comes first: it has a fixed length in fenced names, and a
// separator keeps the key unambiguous even for ids that do not.
std::string FenceTable::Key(std::string_view export_name, std::string_view session) {
  std::string key(session);
  key += '\0';
  key += export_name;
  return key;
}

std::shared_ptr<FenceTable::Session> FenceTable::Pin(std::string_view export_name,
                                                     std::string_view session) {
  std::lock_guard lock(mu_);
  std::string key = Key(export_name, session);
  std::shared_ptr<Session>& slot = sessions_[key];
  if (!slot) slot = std::make_shared<Session>(export_name, session, std::move(key));
  std::shared_ptr<Session> s = slot;  // EvictIdle may rehash: do not keep the reference
  if (s->connections++ == 0 && s->idle) {
    idle_.erase(*s->idle);
    s->idle.reset();
  }
  EvictIdle();
  return s;
}

void FenceTable::Unpin(const std::shared_ptr<Session>& session) {
  std::lock_guard lock(mu_);
  if (--session->connections == 0) session->idle = idle_.insert(idle_.end(), session->key);
  EvictIdle();  // the table may be over its bound while every session had connections
}

// Forgets idle sessions, least recently used first, until the table is within
// its bound or only sessions with connections remain. Each step takes the
// front of idle_, so a join or leave costs O(1) however many sessions have
// connections. Needs mu_.
void FenceTable::EvictIdle() {
  while (sessions_.size() > max_sessions_ && !idle_.empty()) {
    sessions_.erase(idle_.front());
    idle_.pop_front();
  }
}

}  // namespace dst::plugin
