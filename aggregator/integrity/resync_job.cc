#include "aggregator/integrity/resync_job.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/checksummed_volume.h"
#include "common/join.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// What a step does with each of its blocks.
enum class Action : uint8_t {
  kSkip,  // a rebuild's unwritten block, or one no copy could give
  kCopy,  // read from a current copy, verified, written
  kZero,  // a resync's unwritten block: written as zeros
};

// Table pages a rebuild counts at a time before it starts.
constexpr size_t kCountPages = 64;

}  // namespace

struct ResyncJob::StepState {
  uint64_t first = 0;  // data blocks of the set [first, first + count)
  uint64_t count = 0;
  uint64_t volume_first = 0;
  RangeLock::Id lock = 0;
  bool locked = false;  // the lock is held and the pages pinned
  std::vector<PageKey> pages;
  std::vector<uint8_t> data;
  std::vector<Action> actions;
  std::vector<uint32_t> sources;  // current copies, the preferred one first
  uint64_t bytes = 0;             // copied (a rebuild) or covered (a resync)
  StepDone done;
};

ResyncJob::ResyncJob(ChecksummedVolume& volume, ResyncPlan plan)
    : volume_(volume), plan_(std::move(plan)) {
  const uint32_t k = volume_.copies_per_set();
  set_ = plan_.slot / k;
  copy_ = plan_.replace ? volume_.sets_[set_]->replacement_copy() : plan_.slot % k;
  if (plan_.replace) replacement_ = volume_.sets_[set_]->copy(copy_);
  volume_alive_ = volume_.lifetime_.Watch();
  set_blocks_ = volume_.inner_->layout().member_usable_size(set_) / volume_.block_size_;
  if (volume_.view_.layout == volume::LayoutKind::kRaid10)
    chunk_blocks_ = volume_.view_.chunk_size / volume_.block_size_;
  for (ResyncPlan::Range& r : plan_.ranges)
    r.end = std::min(r.end, set_blocks_);
  std::erase_if(plan_.ranges, [](const ResyncPlan::Range& r) { return r.first >= r.end; });
  if (!plan_.ranges.empty()) pos_ = plan_.ranges[0].first;
  if (!plan_.full)
    for (const ResyncPlan::Range& r : plan_.ranges)
      total_bytes_ += (r.end - r.first) * volume_.block_size_;
}

ResyncJob::~ResyncJob() {
  if (replacement_ != nullptr && !completed_ && !volume_alive_.expired())
    volume_.ReplacementJobGone(replacement_);
}

bool ResyncJob::IsReplacement(const BackgroundJob& job) {
  const auto* resync = dynamic_cast<const ResyncJob*>(&job);
  return resync != nullptr && resync->replace();
}

std::string ResyncJob::what() const {
  const char* doing = plan_.replace ? "replacing " : plan_.full ? "rebuilding " : "resyncing ";
  return doing + volume_.name() + " slot " + std::to_string(plan_.slot);
}

int ResyncJob::priority() const {
  return static_cast<int>(volume_.sets_[set_]->current_copies());
}

void ResyncJob::Prepare(Done done) {
  if (!plan_.full || plan_.ranges.empty()) return done(0);
  CountWritten(0, plan_.ranges[0].first, std::move(done));
}

// Pins up to kCountPages table pages from block `from` of range `range` on,
// counts the blocks whose entry is not zero, and goes on with the rest.
void ResyncJob::CountWritten(size_t range, uint64_t from, Done done) {
  if (range >= plan_.ranges.size()) return done(0);
  const ResyncPlan::Range& r = plan_.ranges[range];
  TableCache& table = volume_.table_;
  std::vector<PageKey> keys;
  uint64_t end = from;
  while (end < r.end) {
    const PageKey key = table.KeyOf(set_, end);
    if (keys.empty() || keys.back() != key) {
      if (keys.size() == kCountPages) break;
      keys.push_back(key);
    }
    ++end;
  }
  table.Pin(keys, [this, alive = lifetime_.Watch(), keys, range, from, end,
                   done = std::move(done)](int err) mutable {
    if (alive.expired()) return;
    if (err == 0)
      for (uint64_t b = from; b < end; ++b)
        if (!ChecksummedVolume::IsZeroEntry(volume_.table_.Entry(set_, b)))
          total_bytes_ += volume_.block_size_;
    volume_.table_.Unpin(keys);
    if (err != 0) return done(err);
    const bool range_done = end >= plan_.ranges[range].end;
    const size_t next_range = range_done ? range + 1 : range;
    const uint64_t next_from =
        range_done ? (next_range < plan_.ranges.size() ? plan_.ranges[next_range].first : 0) : end;
    // Posted: a cached table would otherwise recurse once per batch.
    asio::post(volume_.io_, [this, alive, next_range, next_from, done = std::move(done)]() mutable {
      if (!alive.expired()) CountWritten(next_range, next_from, std::move(done));
    });
  });
}

bool ResyncJob::HasStep() const {
  return range_ < plan_.ranges.size();
}

uint64_t ResyncJob::cursor() const {
  if (!in_flight_.empty()) return *in_flight_.begin();
  return range_ < plan_.ranges.size() ? pos_ : set_blocks_;
}

ResyncJob::Piece ResyncJob::NextPiece() {
  const ResyncPlan::Range& r = plan_.ranges[range_];
  uint64_t count = std::min(r.end - pos_, kStepBytes / volume_.block_size_);
  if (chunk_blocks_ != 0) count = std::min(count, chunk_blocks_ - pos_ % chunk_blocks_);
  const Piece piece{pos_, count};
  pos_ += count;
  if (pos_ >= r.end && ++range_ < plan_.ranges.size()) pos_ = plan_.ranges[range_].first;
  return piece;
}

void ResyncJob::Step(StepDone done) {
  auto step = std::make_shared<StepState>();
  const Piece piece = NextPiece();
  step->first = piece.first;
  step->count = piece.count;
  step->done = std::move(done);
  in_flight_.insert(step->first);
  const uint32_t bs = volume_.block_size_;
  step->volume_first = volume_.inner_->layout().VolumeOffset(set_, step->first * bs) / bs;
  for (uint32_t c : volume_.CurrentCopies(set_))
    if (c != copy_) step->sources.push_back(c);
  // Spread the steps over the current copies.
  if (!step->sources.empty())
    std::rotate(step->sources.begin(),
                step->sources.begin() + static_cast<ptrdiff_t>(pieces_ % step->sources.size()),
                step->sources.end());
  ++pieces_;
  // The target taken out meanwhile (failed by a write or by the operator): the job ends here.
  const bool target_out = volume_.sets_[set_]->role(copy_) != volume::CopyRole::kCatchingUp;
  if (volume_.superseded_ || step->sources.empty() || target_out) {
    const int err = volume_.superseded_ ? EROFS : target_out ? ECANCELED : EIO;
    asio::post(volume_.io_, [this, alive = lifetime_.Watch(), step, err] {
      if (!alive.expired()) Finish(step, err);
    });
    return;
  }
  volume_.lock_.Acquire(step->volume_first, step->count, true,
                        [this, alive = lifetime_.Watch(), step](RangeLock::Id id) {
                          if (alive.expired()) return;
                          step->lock = id;
                          step->locked = true;
                          Locked(step);
                        });
}

void ResyncJob::Locked(const std::shared_ptr<StepState>& step) {
  for (uint64_t b = 0; b < step->count; ++b) {
    const PageKey key = volume_.table_.KeyOf(set_, step->first + b);
    if (std::find(step->pages.begin(), step->pages.end(), key) == step->pages.end())
      step->pages.push_back(key);
  }
  volume_.table_.Pin(step->pages, [this, alive = lifetime_.Watch(), step](int err) {
    if (alive.expired()) return;
    if (err != 0) return Finish(step, err);
    Pinned(step);
  });
}

// Classifies the blocks by their entries, then reads each run of written
// blocks from a current copy.
void ResyncJob::Pinned(const std::shared_ptr<StepState>& step) {
  const uint32_t bs = volume_.block_size_;
  step->data.assign(step->count * bs, 0);
  step->actions.assign(step->count, Action::kSkip);
  for (uint64_t b = 0; b < step->count; ++b) {
    const bool zero = ChecksummedVolume::IsZeroEntry(volume_.table_.Entry(set_, step->first + b));
    step->actions[b] = zero ? (plan_.full ? Action::kSkip : Action::kZero) : Action::kCopy;
  }
  auto join = MakeJoin([this, alive = lifetime_.Watch(), step](int) {
    if (!alive.expired()) WriteTarget(step);
  });
  for (uint64_t b = 0; b < step->count;) {
    if (step->actions[b] != Action::kCopy) {
      ++b;
      continue;
    }
    uint64_t end = b;
    while (end < step->count && step->actions[end] == Action::kCopy)
      ++end;
    auto part = Part(join);
    ReadRun(step, b, end - b, [part] { part(0); });
    b = end;
  }
  join->Arrive(0);
}

void ResyncJob::ReadRun(const std::shared_ptr<StepState>& step, uint64_t at, uint64_t count,
                        std::function<void()> next) {
  const uint32_t bs = volume_.block_size_;
  auto io = std::make_shared<volume::MemberIo>();
  io->op = volume::MemberOp::kRead;
  io->offset = volume_.geometries_[set_].data.offset + (step->first + at) * bs;
  io->length = count * bs;
  io->data = step->data.data() + at * bs;
  io->only_copy = static_cast<int32_t>(step->sources[0]);
  io->done = [this, alive = lifetime_.Watch(), step, at, count,
              next = std::move(next)](int err) mutable {
    if (alive.expired()) return;
    auto join = MakeJoin([next = std::move(next)](int) { next(); });
    for (uint64_t b = at; b < at + count; ++b) {
      const uint64_t block = step->volume_first + b;
      if (err == 0 && volume_.Verify(block, volume_.table_.Entry(set_, step->first + b),
                                     step->data.data() + b * volume_.block_size_))
        continue;
      auto part = Part(join);
      Fallback(step, b, 1, [part] { part(0); });
    }
    join->Arrive(0);
  };
  volume_.members_[set_]->Submit(std::move(io));
}

void ResyncJob::Fallback(const std::shared_ptr<StepState>& step, uint64_t index, size_t next_copy,
                         std::function<void()> next) {
  const uint32_t bs = volume_.block_size_;
  const uint64_t block = step->volume_first + index;
  if (next_copy >= step->sources.size()) {
    ++volume_.counters_.resync_unrecoverable;
    step->actions[index] = Action::kSkip;
    LOG_ERROR(
        "%s: volume offset %llu (set %u, data offset %llu) fails verification on every "
        "current copy: left as it is on the target",
        what().c_str(), static_cast<unsigned long long>(block * bs), set_,
        static_cast<unsigned long long>((step->first + index) * bs));
    return next();
  }
  auto io = std::make_shared<volume::MemberIo>();
  io->op = volume::MemberOp::kRead;
  io->offset = volume_.geometries_[set_].data.offset + (step->first + index) * bs;
  io->length = bs;
  io->data = step->data.data() + index * bs;
  io->only_copy = static_cast<int32_t>(step->sources[next_copy]);
  io->done = [this, alive = lifetime_.Watch(), step, index, next_copy, block,
              next = std::move(next)](int err) mutable {
    if (alive.expired()) return;
    if (err == 0 && volume_.Verify(block, volume_.table_.Entry(set_, step->first + index),
                                   step->data.data() + index * volume_.block_size_))
      return next();
    Fallback(step, index, next_copy + 1, std::move(next));
  };
  volume_.members_[set_]->Submit(std::move(io));
}

// Each run of blocks to copy or zero is written to the target alone.
void ResyncJob::WriteTarget(const std::shared_ptr<StepState>& step) {
  const uint32_t bs = volume_.block_size_;
  auto join = MakeJoin([this, alive = lifetime_.Watch(), step](int err) {
    if (!alive.expired()) WriteTable(step, err);
  });
  for (uint64_t b = 0; b < step->count;) {
    if (step->actions[b] == Action::kSkip) {
      ++b;
      continue;
    }
    uint64_t end = b;
    while (end < step->count && step->actions[end] != Action::kSkip)
      ++end;
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kWrite;
    io->offset = volume_.geometries_[set_].data.offset + (step->first + b) * bs;
    io->length = (end - b) * bs;
    io->data = step->data.data() + b * bs;
    io->only_copy = static_cast<int32_t>(copy_);
    io->done = [step, part = Part(join)](int err) { part(err); };
    volume_.members_[set_]->Submit(std::move(io));
    if (plan_.full)
      for (uint64_t i = b; i < end; ++i)
        step->bytes += step->actions[i] == Action::kCopy ? bs : 0;
    b = end;
  }
  if (!plan_.full) step->bytes = step->count * bs;
  join->Arrive(0);
}

// The step's table pages go through the set, so the target gets them with the
// current copies (and in order with the cache's own writes of those pages).
void ResyncJob::WriteTable(const std::shared_ptr<StepState>& step, int err) {
  if (err != 0) {
    // Taken out already (a client write failed on it, the operator failed it): that was logged,
    // and the job ends as it would at its next step.
    if (volume_.sets_[set_]->role(copy_) != volume::CopyRole::kCatchingUp)
      return Finish(step, ECANCELED);
    LOG_ERROR("%s: writing data offset %llu of the target: %s", what().c_str(),
              static_cast<unsigned long long>(step->first * volume_.block_size_),
              std::strerror(err));
    const std::string cause = std::string("resync write failed: ") + std::strerror(err);
    if (plan_.replace)
      volume_.ReplacementFailed(cause);
    else
      volume_.DemoteSlot(plan_.slot, cause, nullptr);
    return Finish(step, err);
  }
  auto join = MakeJoin([this, alive = lifetime_.Watch(), step](int table_err) {
    if (!alive.expired()) Finish(step, table_err);
  });
  for (const PageKey& key : step->pages) {
    volume_.table_.MarkDirty(key);
    volume_.table_.WriteNow(key, Part(join));
  }
  join->Arrive(0);
}

void ResyncJob::Finish(const std::shared_ptr<StepState>& step, int err) {
  if (step->locked) {
    volume_.table_.Unpin(step->pages);
    volume_.lock_.Release(step->lock);
  }
  in_flight_.erase(step->first);
  if (err == 0) {
    done_bytes_ += step->bytes;
    (plan_.full ? volume_.counters_.rebuild_bytes : volume_.counters_.resync_bytes) += step->bytes;
  }
  const uint64_t bytes = err == 0 ? step->bytes : 0;
  step->done(bytes, bytes, err);
}

void ResyncJob::FlushTarget(Done done) {
  if (!volume_.members_[set_]->capabilities().can_flush) return done(0);
  auto io = std::make_shared<volume::MemberIo>();
  io->op = volume::MemberOp::kFlush;
  io->only_copy = static_cast<int32_t>(copy_);
  io->done = std::move(done);
  volume_.members_[set_]->Submit(std::move(io));
}

// The target's data and table pages below the cursor are durable before the
// superblocks say so.
void ResyncJob::Checkpoint(Done done) {
  if (plan_.replace) return FlushTarget(std::move(done));
  const uint64_t at = cursor();
  FlushTarget([this, alive = lifetime_.Watch(), at, done = std::move(done)](int err) mutable {
    if (alive.expired()) return;
    if (err != 0) return done(err);
    volume_.QueueSlotChange(plan_.slot,
                            plan_.full ? MemberState::kRebuilding : MemberState::kResyncing, at,
                            std::move(done));
  });
}

void ResyncJob::Complete(Done done) {
  FlushTarget([this, alive = lifetime_.Watch(), done = std::move(done)](int err) mutable {
    if (alive.expired()) return;
    if (err != 0) return done(err);
    if (plan_.replace) {
      completed_ = true;  // from here the volume ends the replacement, whatever happens
      return volume_.FinishReplacement([this, alive, done = std::move(done)](int end_err) mutable {
        if (alive.expired()) return;
        if (end_err != 0) return done(end_err);
        ClearMaps(std::move(done));
      });
    }
    volume_.QueueSlotChange(
        plan_.slot, MemberState::kActive, 0,
        [this, alive, done = std::move(done)](int update_err) mutable {
          if (alive.expired()) return;
          if (update_err != 0) return done(update_err);
          volume::MirrorSet& set = *volume_.sets_[set_];
          set.SetRole(copy_, volume::CopyRole::kCurrent);
          LOG_INFO("volume %s: slot %u %s is current again (set %u now [%s]): %s of %s (%s)",
                   volume_.name().c_str(), plan_.slot, set.copy(copy_)->name().c_str(), set_,
                   set.Health().c_str(), FormatSize(done_bytes_).c_str(),
                   plan_.full ? "written data rebuilt" : "missed regions resynced",
                   plan_.reason.c_str());
          ClearMaps(std::move(done));
        });
  });
}

// A whole set needs its missed-write map no more; the map epoch moves once
// every set's maps are clear (a stale copy of another set still needs its).
void ResyncJob::ClearMaps(Done done) {
  volume::MirrorSet& set = *volume_.sets_[set_];
  if (set.current_copies() < set.copy_count()) return done(0);
  volume_.intent_.ClearMissed(set_);
  volume_.intent_.Sync([this, alive = lifetime_.Watch(), done = std::move(done)](int err) mutable {
    if (alive.expired()) return;
    if (err != 0 || volume_.intent_.missed_count() != 0) return done(err);
    volume_.QueueMapEpoch(std::move(done));
  });
}

}  // namespace dst::integrity
