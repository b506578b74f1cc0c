#include "aggregator/integrity/background_jobs.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/log.h"
#include "common/progress.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// While any job exists, the runner looks again at least this often: for
// checkpoints, progress lines and a throttle that opened.
constexpr auto kTick = std::chrono::milliseconds(200);

}  // namespace

const char* JobKindName(BackgroundJob::Kind kind) {
  switch (kind) {
    case BackgroundJob::Kind::kResync:
      return "resync";
    case BackgroundJob::Kind::kRebuild:
      return "rebuild";
    case BackgroundJob::Kind::kScrub:
      return "scrub";
  }
  return "?";
}

BackgroundJobs::BackgroundJobs(asio::io_context& io, Options options)
    : io_(io),
      options_(options),
      rate_(options.limits, Clock::now()),
      timer_(io),
      last_checkpoint_(Clock::now()) {}

BackgroundJobs::~BackgroundJobs() {
  timer_.cancel();
}

void BackgroundJobs::Add(std::unique_ptr<BackgroundJob> job, bool paused) {
  Entry entry;
  entry.job = std::move(job);
  entry.paused = paused;
  entry.last_progress = Clock::now();
  entries_.push_back(std::move(entry));
  Pump();
}

void BackgroundJobs::SetLimits(RateLimits limits) {
  rate_.SetLimits(limits, Clock::now());
  timer_at_.reset();  // the wait was computed at the old rate
  timer_.cancel();
  Pump();
}

bool BackgroundJobs::Pause(BackgroundJob::Kind kind) {
  bool any = false;
  for (Entry& e : entries_)
    if (e.job->kind() == kind && !e.stopping) any = e.paused = true;
  if (any) Pump();
  return any;
}

bool BackgroundJobs::Resume(BackgroundJob::Kind kind) {
  bool any = false;
  for (Entry& e : entries_) {
    if (e.job->kind() != kind || e.stopping) continue;
    any = true;
    e.paused = false;
  }
  if (any) Pump();
  return any;
}

bool BackgroundJobs::Stop(BackgroundJob::Kind kind) {
  bool any = false;
  for (Entry& e : entries_)
    if (e.job->kind() == kind && !e.completing) any = e.stopping = true;
  if (any) Pump();
  return any;
}

bool BackgroundJobs::Cancel(const std::function<bool(const BackgroundJob&)>& match,
                            const std::string& why) {
  bool any = false;
  for (Entry& e : entries_) {
    if (e.completing || e.stopping || !match(*e.job)) continue;
    LOG_WARNING("%s: stopped: %s", e.job->what().c_str(), why.c_str());
    any = e.stopping = e.canceled = true;
    e.dirty = false;
  }
  // Posted: the caller may be deep in a job's own callbacks, where dropping it is not safe.
  if (any)
    asio::post(io_, [this, alive = lifetime_.Watch()] {
      if (!alive.expired()) Pump();
    });
  return any;
}

bool BackgroundJobs::Has(BackgroundJob::Kind kind) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [kind](const Entry& e) { return e.job->kind() == kind && !e.stopping; });
}

uint64_t BackgroundJobs::bytes_done(BackgroundJob::Kind kind) const {
  return bytes_done_[static_cast<int>(kind)];
}

void BackgroundJobs::Shutdown(Done done) {
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  Pump();
}

// The job whose steps run: the first of the lowest priority among those not
// paused or stopping. While it still has steps in flight or is completing,
// nothing else starts (nullptr): "goes on once the other is done".
const BackgroundJobs::Entry* BackgroundJobs::Running() const {
  const Entry* best = nullptr;
  for (const Entry& e : entries_) {
    if (e.paused || e.stopping) continue;
    if (best == nullptr || e.job->priority() < best->job->priority()) best = &e;
  }
  return best;
}

BackgroundJobs::Entry* BackgroundJobs::Find(const BackgroundJob* job) {
  for (Entry& e : entries_)
    if (e.job.get() == job) return &e;
  return nullptr;
}

void BackgroundJobs::Pump() {
  const Clock::time_point now = Clock::now();
  if (!shutting_down_) {
    // Not while a checkpoint is under way: the checkpoint may be this job's, and a job completed
    // is dropped, its checkpoint's answer with it (the runner would wait for it forever).
    for (Entry& e : entries_)
      if (!e.paused && !e.stopping && !e.completing && e.in_flight == 0 && !e.job->HasStep() &&
          !checkpointing_)
        CompleteJob(e);
    Entry* running = Running();
    if (running != nullptr && !running->completing) {
      size_t in_flight = 0;
      for (const Entry& e : entries_)
        in_flight += e.in_flight;
      while (in_flight < rate_.max_steps(now) && running->job->HasStep()) {
        const Clock::time_point next = rate_.NextStart(now);
        if (next > now) {
          ArmTimer(next);
          break;
        }
        StartStep(*running, now);
        ++in_flight;
      }
    }
    LogProgress(now);
  }
  MaybeCheckpoint(now);
  MaybeFinishShutdown();
  if (!entries_.empty() && !shutting_down_) ArmTimer(now + kTick);
}

void BackgroundJobs::StartStep(Entry& entry, Clock::time_point) {
  ++entry.in_flight;
  BackgroundJob* job = entry.job.get();
  job->Step([this, alive = lifetime_.Watch(), job](uint64_t bytes, uint64_t moved, int err) {
    if (!alive.expired()) OnStepDone(job, bytes, moved, err);
  });
}

// Charged when done, with the data the step really moved: the bound on steps
// in flight keeps the overshoot to a few steps.
void BackgroundJobs::OnStepDone(BackgroundJob* job, uint64_t bytes, uint64_t moved, int err) {
  Entry* entry = Find(job);
  if (entry == nullptr) return;
  const Clock::time_point now = Clock::now();
  --entry->in_flight;
  rate_.Charge(moved, now);
  rate_.Finished(bytes, now);
  bytes_done_[static_cast<int>(job->kind())] += bytes;
  if (bytes > 0 && !entry->canceled) entry->dirty = true;
  if (err != 0) {
    LOG_WARNING("%s: stopped: %s", job->what().c_str(), std::strerror(err));
    entry->stopping = true;
    entry->dirty = false;  // a failed job is not resumed from here
  }
  Pump();
}

void BackgroundJobs::CompleteJob(Entry& entry) {
  entry.completing = true;
  BackgroundJob* job = entry.job.get();
  job->Complete([this, alive = lifetime_.Watch(), job](int err) {
    if (alive.expired()) return;
    if (err != 0)
      LOG_WARNING("%s: stopped: could not record the end: %s", job->what().c_str(),
                  std::strerror(err));
    else
      LOG_INFO("%s: done (%s)", job->what().c_str(), FormatSize(job->total_bytes()).c_str());
    Drop(job);
    Pump();
  });
}

void BackgroundJobs::Drop(BackgroundJob* job) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [job](const Entry& e) { return e.job.get() == job; }),
                 entries_.end());
}

void BackgroundJobs::MaybeCheckpoint(Clock::time_point now) {
  if (checkpointing_) return;
  Entry* running = shutting_down_ ? nullptr : Running();
  for (Entry& e : entries_) {
    if (e.in_flight > 0 || e.completing || &e == running) continue;
    if (e.stopping && !e.dirty) {
      Drop(e.job.get());
      return MaybeCheckpoint(now);
    }
    if (e.dirty) return Checkpoint(e);
  }
  // A job completing is dropped once done: a checkpoint of it would never be answered.
  if (running != nullptr && !running->completing && running->dirty &&
      now - last_checkpoint_ >= options_.checkpoint_every)
    Checkpoint(*running);
}

void BackgroundJobs::Checkpoint(Entry& entry) {
  checkpointing_ = true;
  entry.dirty = false;
  last_checkpoint_ = Clock::now();
  BackgroundJob* job = entry.job.get();
  job->Checkpoint([this, alive = lifetime_.Watch(), job](int err) {
    if (alive.expired()) return;
    checkpointing_ = false;
    if (err != 0)
      LOG_WARNING("%s: could not record progress: %s", job->what().c_str(), std::strerror(err));
    Pump();
  });
}

void BackgroundJobs::LogProgress(Clock::time_point now) {
  for (Entry& e : entries_) {
    if (e.in_flight == 0 || now - e.last_progress < options_.progress_every) continue;
    e.last_progress = now;
    const double rate = rate_.rate(now);
    LOG_INFO("%s", Progress::LineAtRate(e.job->what(), e.job->done_bytes(), e.job->total_bytes(),
                                        rate > 0 ? rate : -1)
                       .c_str());
  }
}

void BackgroundJobs::ArmTimer(Clock::time_point at) {
  if (timer_at_ && *timer_at_ <= at) return;
  timer_at_ = at;
  timer_.expires_at(at);
  timer_.async_wait([this, alive = lifetime_.Watch()](const asio::error_code& ec) {
    if (ec || alive.expired()) return;
    timer_at_.reset();
    Pump();
  });
}

void BackgroundJobs::MaybeFinishShutdown() {
  if (!shutting_down_ || !shutdown_done_ || checkpointing_) return;
  for (const Entry& e : entries_)
    if (e.in_flight > 0 || e.completing || e.dirty) return;
  timer_.cancel();
  asio::post(io_, [done = std::exchange(shutdown_done_, nullptr)] { done(0); });
}

bool BackgroundJobs::Any(const std::function<bool(const BackgroundJob&)>& match) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&match](const Entry& e) { return match(*e.job); });
}

std::vector<JobStatus> BackgroundJobs::Status() const {
  const Entry* running = Running();
  const double rate = rate_.rate(Clock::now());
  std::vector<JobStatus> out;
  for (const Entry& e : entries_) {
    JobStatus s;
    s.kind = e.job->kind();
    s.what = e.job->what();
    s.detail = e.job->detail();
    s.running = &e == running || e.in_flight > 0;
    s.paused = e.paused;
    s.done_bytes = e.job->done_bytes();
    s.total_bytes = e.job->total_bytes();
    s.bytes_per_second = s.running ? rate : 0;
    if (s.running && rate > 0 && s.total_bytes > s.done_bytes)
      s.eta = std::chrono::seconds(
          static_cast<int64_t>(static_cast<double>(s.total_bytes - s.done_bytes) / rate + 0.5));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace dst::integrity
