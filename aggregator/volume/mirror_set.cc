#include "aggregator/volume/mirror_set.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/join.h"

namespace dst::volume {

const char* CopyRoleName(CopyRole role) {
  switch (role) {
    case CopyRole::kCurrent:
      return "current";
    case CopyRole::kCatchingUp:
      return "catching-up";
    case CopyRole::kOut:
      return "out";
  }
  return "?";
}

namespace {

bool IsReadLike(MemberOp op) {
  return op == MemberOp::kRead || op == MemberOp::kCache || op == MemberOp::kBlockStatus;
}

// Bytes a copy holds in flight for the read balance: the payload of reads
// and writes.
uint64_t LoadOf(const MemberIo& io) {
  return io.op == MemberOp::kRead || io.op == MemberOp::kWrite ? io.length : 0;
}

// "write of 4096 at 8192"
std::string Describe(const MemberIo& io) {
  return std::string(MemberOpName(io.op)) + " of " + std::to_string(io.length) + " at " +
         std::to_string(io.offset);
}

// What a copy said when it failed: its own failure text, which names it,
// or its URI and the errno.
std::string FailureOf(const MemberTarget& target, const MemberIo& child, int err) {
  if (!child.failure.empty()) {
    if (child.failure.find(target.name()) != std::string::npos) return child.failure;
    return target.name() + ": " + child.failure;
  }
  return target.name() + ": " + Describe(child) + " failed: " + std::strerror(err);
}

// A copy's answer to a parent whose set is gone: passed on as it is.
void PassOn(MemberIo& parent, MemberIo& child, int err) {
  if (err != 0) parent.failure = child.failure;
  parent.extents = std::move(child.extents);
  parent.done(err);
}

// An answer that says nothing about the copy's health: it declined a fast
// zero, which the caller handles by writing zeros.
bool DeclinedFastZero(const MemberIo& io, int err) {
  return io.op == MemberOp::kZero && io.fast_zero && (err == ENOTSUP || err == EOPNOTSUPP);
}

}  // namespace

// A write, TRIM, WRITE_ZEROES or FLUSH on its way to every written copy:
// one part per copy, one more per demotion it waits for. The first error
// wins; the parent is done after every part. Held by the callbacks of its
// parts.
struct MirrorSet::Fanout {
  struct Finisher {
    Fanout* self;
    void operator()(int err) const { self->Finish(err); }
  };

  explicit Fanout(std::shared_ptr<MemberIo> parent)
      : parent(std::move(parent)), join(Finisher{this}) {}

  void Finish(int err) {
    if (err != 0 && parent->failure.empty()) parent->failure = first_failure;
    auto io = std::move(parent);
    io->done(err);
  }

  // Records why the parent fails, the first reason only.
  void Failed(std::string why) {
    if (first_failure.empty()) first_failure = std::move(why);
  }

  std::shared_ptr<MemberIo> parent;
  std::string first_failure;
  BasicJoin<Finisher> join;
};

// A read, CACHE or BLOCK_STATUS on one copy at a time: the copies tried so
// far and what each said. Held by the callback of the copy it waits for.
struct MirrorSet::Read : std::enable_shared_from_this<Read> {
  Read(MirrorSet& set, std::shared_ptr<MemberIo> parent)
      : set(set), parent(std::move(parent)), avoid(this->parent->avoid_copies) {}

  // What the copies can do for this read: the avoided ones cannot.
  std::vector<CopyLoad> Loads() const {
    std::vector<CopyLoad> loads = set.Loads();
    for (uint32_t c = 0; c < loads.size() && c < 64; ++c)
      if (avoid & (uint64_t{1} << c)) loads[c].readable = false;
    return loads;
  }
  ReadRequest Request() const { return {parent->offset, parent->length}; }

  void From(uint32_t c);
  void Served(uint32_t c, MemberIo& child);
  void Next();

  MirrorSet& set;
  std::shared_ptr<MemberIo> parent;
  const uint64_t avoid;
  std::vector<uint32_t> tried;
  std::vector<std::string> failures;
};

MirrorSet::MirrorSet(asio::io_context& io, uint32_t set, std::vector<CopySetup> copies,
                     SetHealth* health)
    : io_(io), set_(set), slot_copies_(static_cast<uint32_t>(copies.size())), health_(health) {
  copies_.reserve(copies.size());
  for (const CopySetup& setup : copies) {
    Copy copy;
    copy.target = setup.target;
    copy.role = setup.target ? setup.role : CopyRole::kOut;
    copy.write_mostly = setup.write_mostly;
    copy.cursor = setup.cursor;
    copies_.push_back(std::move(copy));
  }
  ComputeCapabilities();
  name_ = NameOf(set_, copies_, slot_copies_);
}

std::string MirrorSet::NameOf(uint32_t set, const std::vector<Copy>& copies, uint32_t k) {
  std::string name = "set " + std::to_string(set) + " (";
  for (size_t c = 0; c < k; ++c) {
    if (c > 0) name += ", ";
    name += copies[c].target ? copies[c].target->name() : std::string("missing");
  }
  return name + ")";
}

// I/Os waiting for a demotion that can no longer become durable here end
// with ECANCELED, later, from the event loop.
MirrorSet::~MirrorSet() {
  lifetime_.End();
  for (Copy& copy : copies_)
    for (auto& waiter : copy.demotion_waiters)
      asio::post(io_, [waiter = std::move(waiter)] { waiter(ECANCELED); });
}

void MirrorSet::ComputeCapabilities() {
  bool first = true;
  for (const Copy& copy : copies_) {
    if (!copy.target) continue;
    const MemberCapabilities& c = copy.target->capabilities();
    if (first) {
      caps_ = c;
      first = false;
      continue;
    }
    caps_.size = std::min(caps_.size, c.size);
    caps_.max_request = std::min(caps_.max_request, c.max_request);
    caps_.min_block = std::max(caps_.min_block, c.min_block);
    caps_.preferred_block = std::max(caps_.preferred_block, c.preferred_block);
    caps_.read_only = caps_.read_only || c.read_only;
    caps_.can_flush = caps_.can_flush && c.can_flush;
    caps_.can_fua = caps_.can_fua && c.can_fua;
    caps_.can_trim = caps_.can_trim && c.can_trim;
    caps_.can_zero = caps_.can_zero && c.can_zero;
    caps_.can_fast_zero = caps_.can_fast_zero && c.can_fast_zero;
    caps_.can_cache = caps_.can_cache && c.can_cache;
    caps_.can_multi_conn = caps_.can_multi_conn && c.can_multi_conn;
    caps_.can_block_status = caps_.can_block_status && c.can_block_status;
  }
}

uint32_t MirrorSet::current_copies() const {
  return static_cast<uint32_t>(std::count_if(
      copies_.begin(), copies_.end(), [](const Copy& c) { return c.role == CopyRole::kCurrent; }));
}

std::string MirrorSet::Health() const {
  std::string health;
  for (uint32_t c = 0; c < copies_.size(); ++c) {
    const Copy& copy = copies_[c];
    if (c == slot_copies_) {
      if (copy.role == CopyRole::kOut) break;
      health += '+';
    }
    switch (copy.role) {
      case CopyRole::kCurrent:
        health += 'U';
        break;
      case CopyRole::kCatchingUp:
        health += 'C';
        break;
      case CopyRole::kOut:
        health += '_';
        break;
    }
  }
  return health;
}

void MirrorSet::SetRole(uint32_t c, CopyRole role, uint64_t cursor) {
  Copy& copy = copies_.at(c);
  copy.role = copy.target ? role : CopyRole::kOut;
  copy.cursor = cursor;
}

void MirrorSet::SetWriteMostly(uint32_t c, bool write_mostly) {
  copies_.at(c).write_mostly = write_mostly;
}

Status MirrorSet::SetTarget(uint32_t c, MemberTarget* target) {
  if (c >= copies_.size())
    return Status::Error(ERANGE, name_ + " has no copy " + std::to_string(c));
  if (target == nullptr)
    return Status::Invalid(name_ + ": copy " + std::to_string(c) + ": no target");
  Copy& copy = copies_[c];
  if (copy.role != CopyRole::kOut || copy.demoting)
    return Status::Error(EBUSY, name_ + ": copy " + std::to_string(c) + " is " +
                                    (copy.demoting ? "being demoted" : CopyRoleName(copy.role)) +
                                    ": only a copy that is out takes a new target");
  DST_RETURN_IF_ERROR(CanTake(*target));
  copy.target = target;
  name_ = NameOf(set_, copies_, slot_copies_);
  return Status::Ok();
}

Status MirrorSet::AttachReplacement(MemberTarget* target) {
  if (copies_.size() == slot_copies_) copies_.emplace_back();
  DST_RETURN_IF_ERROR(SetTarget(slot_copies_, target));
  SetRole(slot_copies_, CopyRole::kCatchingUp);
  copies_[slot_copies_].write_mostly = false;
  return Status::Ok();
}

Status MirrorSet::ExchangeTargets(uint32_t a, uint32_t b) {
  if (a >= copies_.size() || b >= copies_.size())
    return Status::Error(ERANGE, name_ + " has no copy " + std::to_string(std::max(a, b)));
  if (copies_[a].demoting || copies_[b].demoting)
    return Status::Error(EBUSY, name_ + ": a copy is being demoted");
  std::swap(copies_[a].target, copies_[b].target);
  name_ = NameOf(set_, copies_, slot_copies_);
  return Status::Ok();
}

std::optional<uint32_t> MirrorSet::IndexOf(const MemberTarget* target) const {
  for (uint32_t c = 0; c < copies_.size(); ++c)
    if (copies_[c].target == target) return c;
  return std::nullopt;
}

// What the set promised (caps_) against what `target` can do.
Status MirrorSet::CanTake(const MemberTarget& target) const {
  const MemberCapabilities& t = target.capabilities();
  const std::string who = target.name() + " cannot be a copy of " + name_ + ": ";
  if (t.size < caps_.size)
    return Status::Invalid(who + "it has " + std::to_string(t.size) + " bytes, the set " +
                           std::to_string(caps_.size));
  if (t.max_request < caps_.max_request)
    return Status::Invalid(who + "it takes requests of up to " + std::to_string(t.max_request) +
                           " bytes, the set " + std::to_string(caps_.max_request));
  if (t.min_block > caps_.min_block)
    return Status::Invalid(who + "it needs " + std::to_string(t.min_block) +
                           "-byte blocks, the set " + std::to_string(caps_.min_block));
  if (t.read_only && !caps_.read_only) return Status::Invalid(who + "it is read-only");
  const std::pair<bool MemberCapabilities::*, const char*> features[] = {
      {&MemberCapabilities::can_flush, "flush"},
      {&MemberCapabilities::can_fua, "FUA"},
      {&MemberCapabilities::can_trim, "trim"},
      {&MemberCapabilities::can_zero, "write zeroes"},
      {&MemberCapabilities::can_fast_zero, "fast zero"},
      {&MemberCapabilities::can_cache, "cache"},
      {&MemberCapabilities::can_multi_conn, "multi-conn"},
      {&MemberCapabilities::can_block_status, "block status"},
  };
  for (const auto& [has, feature] : features)
    if (caps_.*has && !(t.*has))
      return Status::Invalid(who + "it lacks " + feature + ", which the set has");
  return Status::Ok();
}

std::vector<CopyLoad> MirrorSet::Loads() const {
  std::vector<CopyLoad> loads(copies_.size());
  for (size_t c = 0; c < copies_.size(); ++c) {
    const Copy& copy = copies_[c];
    loads[c].readable = copy.target != nullptr && copy.role != CopyRole::kOut;
    loads[c].write_mostly = copy.write_mostly;
    loads[c].bytes_in_flight = copy.bytes_in_flight;
    if (copy.role == CopyRole::kCatchingUp) loads[c].serve_below = copy.cursor;
  }
  return loads;
}

void MirrorSet::Submit(std::shared_ptr<MemberIo> io) {
  io->served_by = -1;
  if (io->only_copy >= 0) {
    const auto c = static_cast<uint32_t>(io->only_copy);
    if (c < copies_.size() && copies_[c].target) return SubmitToOne(std::move(io), c);
    io->failure = name_ + ": " + Describe(*io) + ": no copy " + std::to_string(io->only_copy);
    asio::post(io_, [io = std::move(io)] { io->done(ENXIO); });
    return;
  }
  if (IsReadLike(io->op)) return SubmitRead(std::move(io));
  SubmitToAll(std::move(io));
}

void MirrorSet::SubmitToOne(std::shared_ptr<MemberIo> io, uint32_t c) {
  auto child = CopyRequest(*io);
  const uint64_t load = LoadOf(*child);
  copies_[c].bytes_in_flight += load;
  child->done = [this, alive = lifetime_.Watch(), c, load, target = copies_[c].target,
                 parent = std::move(io), child = child.get()](int err) {
    if (alive.expired()) return PassOn(*parent, *child, err);
    copies_[c].bytes_in_flight -= load;
    if (err == 0) {
      if (IsReadLike(parent->op)) parent->served_by = static_cast<int32_t>(c);
      parent->extents = std::move(child->extents);
    } else {
      parent->failure = FailureOf(*target, *child, err);
    }
    parent->done(err);
  };
  copies_[c].target->Submit(std::move(child));
}

void MirrorSet::SubmitToAll(std::shared_ptr<MemberIo> io) {
  auto f = std::make_shared<Fanout>(std::move(io));
  std::vector<uint32_t> written;
  for (uint32_t c = 0; c < copies_.size(); ++c)
    if (copies_[c].target && copies_[c].role != CopyRole::kOut) written.push_back(c);
  if (written.empty()) {
    f->Failed(name_ + ": " + Describe(*f->parent) + ": no copy to write (" + Health() + ")");
    asio::post(io_, [f] { f->join.Arrive(EIO); });
    return;
  }
  f->join.Add(written.size());
  for (uint32_t c : written) {
    const bool counted_then = copies_[c].role == CopyRole::kCurrent;
    auto child = CopyRequest(*f->parent);
    const uint64_t load = LoadOf(*child);
    copies_[c].bytes_in_flight += load;
    child->done = [this, alive = lifetime_.Watch(), f, load, submitted = c, counted_then,
                   target = copies_[c].target, child = child.get()](int err) {
      if (alive.expired()) {
        if (err != 0) f->Failed(child->failure);
        return f->join.Arrive(err);
      }
      copies_[submitted].bytes_in_flight -= load;
      if (err == 0) return f->join.Arrive(0);
      // Judged as the copy the target is now. A target that left the set (SetTarget gave its
      // copy another, which it did only once the copy was out durably) says nothing of it.
      const std::optional<uint32_t> now = IndexOf(target);
      if (!now) return f->join.Arrive(0);
      const uint32_t c = *now;
      const bool counted = c == submitted ? counted_then : copies_[c].role == CopyRole::kCurrent;
      const std::string failure = FailureOf(*target, *child, err);
      if (DeclinedFastZero(*child, err)) {
        f->Failed(failure);
        return f->join.Arrive(err);
      }
      if (copies_[c].role == CopyRole::kCurrent && current_copies() == 1) {
        // The last current copy: the set keeps it, the I/O fails (md's MD_BROKEN).
        f->Failed(failure);
        return f->join.Arrive(err);
      }
      if (copies_[c].role == CopyRole::kOut && !copies_[c].demoting) {
        // Already out, durably or by the owner: nothing to wait for.
        return f->join.Arrive(0);
      }
      if (!counted) {
        // A catching-up copy: demoted, but the ack never waited for it.
        Demote(c, failure, [](int) {});
        return f->join.Arrive(0);
      }
      Demote(c, failure, [f, failure, name = copies_[c].target->name()](int durable) {
        if (durable != 0)
          f->Failed(failure + "; demoting " + name +
                    " could not be made durable: " + std::strerror(durable));
        f->join.Arrive(durable);
      });
    };
    copies_[c].target->Submit(std::move(child));
  }
  f->join.Arrive(0);
}

void MirrorSet::Demote(uint32_t c, const std::string& cause, std::function<void(int err)> durable) {
  Copy& copy = copies_[c];
  copy.role = CopyRole::kOut;
  copy.demotion_waiters.push_back(std::move(durable));
  if (copy.demoting) return;
  copy.demoting = true;
  auto finished = [this, alive = lifetime_.Watch(), c](int err) {
    if (alive.expired()) return;  // its waiters went with the set
    Copy& copy = copies_[c];
    copy.demoting = false;
    auto waiters = std::exchange(copy.demotion_waiters, {});
    for (auto& waiter : waiters)
      waiter(err);
  };
  if (!health_) return asio::post(io_, [finished] { finished(0); });
  health_->Demote(set_, c, cause, std::move(finished));
}

void MirrorSet::SubmitRead(std::shared_ptr<MemberIo> io) {
  auto read = std::make_shared<Read>(*this, std::move(io));
  const std::optional<uint32_t> chosen = ChooseCopy(read->Loads(), read->Request(), stream_);
  if (!chosen) {
    MemberIo& parent = *read->parent;
    parent.failure = name_ + ": " + Describe(parent) + ": no copy can serve it (" + Health() +
                     (read->avoid ? ", some avoided" : "") + ")";
    asio::post(io_, [parent = std::move(read->parent)] { parent->done(EIO); });
    return;
  }
  stream_ = AdvanceStream(stream_, read->Request(), *chosen);
  read->From(*chosen);
}

void MirrorSet::Read::From(uint32_t c) {
  tried.push_back(c);
  Copy& copy = set.copies_[c];
  auto child = CopyRequest(*parent);
  const uint64_t load = LoadOf(*child);
  copy.bytes_in_flight += load;
  child->done = [self = shared_from_this(), alive = set.lifetime_.Watch(), c, load,
                 target = copy.target, child = child.get()](int err) {
    if (alive.expired()) return PassOn(*self->parent, *child, err);
    MirrorSet& set = self->set;
    Copy& copy = set.copies_[c];
    copy.bytes_in_flight -= load;
    if (err == 0) return self->Served(c, *child);
    const std::string failure = FailureOf(*target, *child, err);
    self->failures.push_back(failure);
    // Demoted as for a write (never the last current copy), not waited for; judged as the copy
    // the target is now (none when it left the set: its failure is not the new target's).
    if (const std::optional<uint32_t> now = set.IndexOf(target)) {
      const Copy& is = set.copies_[*now];
      const bool last_current = is.role == CopyRole::kCurrent && set.current_copies() == 1;
      if (is.role != CopyRole::kOut && !last_current) set.Demote(*now, failure, [](int) {});
    }
    self->Next();
  };
  copy.target->Submit(std::move(child));
}

void MirrorSet::Read::Served(uint32_t c, MemberIo& child) {
  for (uint32_t failed : tried)
    if (failed != c) ++set.copies_[failed].read_failovers;
  parent->served_by = static_cast<int32_t>(c);
  parent->extents = std::move(child.extents);
  parent->failure.clear();
  auto io = std::move(parent);
  io->done(0);
}

void MirrorSet::Read::Next() {
  const std::optional<uint32_t> next = NextCopy(Loads(), Request(), tried);
  if (next) return From(*next);
  std::string failure = set.name_ + ": " + Describe(*parent) + " failed on every copy tried: ";
  for (size_t i = 0; i < failures.size(); ++i) {
    if (i > 0) failure += "; ";
    failure += failures[i];
  }
  parent->failure = std::move(failure);
  auto io = std::move(parent);
  io->done(EIO);
}

}  // namespace dst::volume
