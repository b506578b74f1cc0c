// BackgroundJobs: runs a volume's background work (resync and rebuild of a
// copy, scrub) next to its clients (docs/redundancy.md, "Background work").
//
// A BackgroundJob is one piece of such work, done in steps of about 1 MiB; it
// knows what a step does, where its cursor is and how to make it durable. The
// runner decides when steps run:
//   - one job at a time: the lowest priority() among those not paused
//     (resyncs of the sets with the fewest current copies first, scrubs
//     last). A job added with a lower priority preempts the running one: the
//     latter gets no new step, its steps in flight finish, and it goes on
//     once the other is done.
//   - each step waits for BackgroundRate (the floor while clients are busy,
//     up to the maximum while they are idle; bounded steps in flight).
//   - every `checkpoint_every` (and when a job is paused, preempted or the
//     runner shuts down) the job's Checkpoint() makes its cursor durable, so
//     that a restart resumes from it; one checkpoint at a time.
//   - every `progress_every` one line per running job:
//     `rebuilding vol0 slot 1: 25% (1 GiB of 4 GiB) at 180 MiB/s, ETA 17 s`.
//   - once a job has no step left and none in flight, its Complete() makes
//     the outcome durable (a copy current again, a scrub's last completion)
//     and the job is dropped; a step or Complete() that fails with an errno
//     ends the job (logged: `WHAT: stopped: ERR`), and the others go on.
//
// Contract: jobs' Step/Checkpoint/Complete call their `done` exactly once, on
// the event loop, never from inside the call. The runner never runs a job's
// `done` callbacks itself. Shutdown() stops new steps, waits for those in
// flight, checkpoints every job that has not completed and calls `done` once.
//
// Threading: the event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/background_rate.h"
#include "common/lifetime.h"

namespace dst::integrity {

class BackgroundJob {
 public:
  enum class Kind : uint8_t { kResync, kRebuild, kScrub };
  using Done = std::function<void(int err)>;
  // `bytes`: how much of the job's total the step covered (progress and the rate shown);
  // `moved`: the data it read and wrote, which the throttle charges (a scrub step over blocks
  // never written reads no data, so that a sparse volume is not scrubbed at the floor).
  using StepDone = std::function<void(uint64_t bytes, uint64_t moved, int err)>;

  virtual ~BackgroundJob() = default;
  virtual Kind kind() const = 0;
  // "rebuilding vol0 slot 1", "scrubbing vol0": log lines and status.
  virtual std::string what() const = 0;
  // Lower runs first.
  virtual int priority() const = 0;
  // Why this job, for status: a resync's "partial: ..." or "full: ..." reason.
  virtual std::string detail() const { return {}; }
  // Whether a step can start now (false once every step has started).
  virtual bool HasStep() const = 0;
  virtual void Step(StepDone done) = 0;
  // Bytes done (of steps that finished) and the job's total.
  virtual uint64_t done_bytes() const = 0;
  virtual uint64_t total_bytes() const = 0;
  // Makes the cursor durable (every step below it finished).
  virtual void Checkpoint(Done done) = 0;
  // Every step finished: makes the outcome durable.
  virtual void Complete(Done done) = 0;
};

// What status shows of a job.
struct JobStatus {
  BackgroundJob::Kind kind;
  std::string what;
  std::string detail;
  bool running = false;  // false: waiting for a job that goes first, or paused
  bool paused = false;
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  double bytes_per_second = 0;
  std::optional<std::chrono::seconds> eta;
};

// "resync", "rebuild", "scrub".
const char* JobKindName(BackgroundJob::Kind kind);

class BackgroundJobs {
 public:
  using Clock = BackgroundRate::Clock;
  using Done = std::function<void(int err)>;

  struct Options {
    RateLimits limits;
    std::chrono::milliseconds checkpoint_every{5000};
    std::chrono::milliseconds progress_every{5000};
  };

  BackgroundJobs(asio::io_context& io, Options options);
  ~BackgroundJobs();
  BackgroundJobs(const BackgroundJobs&) = delete;
  BackgroundJobs& operator=(const BackgroundJobs&) = delete;

  // `paused`: as if Pause() came at once (a paused scrub found at assembly).
  void Add(std::unique_ptr<BackgroundJob> job, bool paused = false);
  // Effective at once (a waiting step is rescheduled).
  void SetLimits(RateLimits limits);
  const RateLimits& limits() const { return rate_.limits(); }

  // Client requests, for the throttle: the volume calls these per request.
  void ClientStarted() { rate_.ClientStarted(Clock::now()); }
  void ClientFinished() { rate_.ClientFinished(Clock::now()); }

  // Jobs of `kind` (a scrub) take no new step until resumed; a paused job is
  // checkpointed once its steps in flight are done. False if there is none.
  bool Pause(BackgroundJob::Kind kind);
  bool Resume(BackgroundJob::Kind kind);
  // Jobs of `kind` end now: no new step; once their steps in flight are done
  // they are checkpointed and dropped (not completed). False if there is none.
  bool Stop(BackgroundJob::Kind kind);
  // The jobs `match` names end now without a checkpoint (what they would record is no longer
  // true: their copy was failed, their replacement ended): no new step; once their steps in flight
  // are done they are dropped. Logged `WHAT: stopped: WHY`. False if none matched.
  bool Cancel(const std::function<bool(const BackgroundJob&)>& match, const std::string& why);
  bool Has(BackgroundJob::Kind kind) const;
  // Whether any job (running, waiting, paused or stopping) matches.
  bool Any(const std::function<bool(const BackgroundJob&)>& match) const;

  void Shutdown(Done done);

  std::vector<JobStatus> Status() const;
  // Bytes every job ever finished (also dropped ones), by kind.
  uint64_t bytes_done(BackgroundJob::Kind kind) const;

 private:
  struct Entry {
    std::unique_ptr<BackgroundJob> job;
    size_t in_flight = 0;
    bool paused = false;
    bool stopping = false;
    bool completing = false;
    bool dirty = false;     // steps finished since its last checkpoint
    bool canceled = false;  // Cancel(): never checkpointed again
    Clock::time_point last_progress;
  };

  const Entry* Running() const;
  Entry* Running() { return const_cast<Entry*>(std::as_const(*this).Running()); }
  // Starts what may start now; arms the timer for what must wait.
  void Pump();
  void StartStep(Entry& entry, Clock::time_point now);
  void OnStepDone(BackgroundJob* job, uint64_t bytes, uint64_t moved, int err);
  void CompleteJob(Entry& entry);
  void EndJob(BackgroundJob* job, int err, const char* how);
  void Drop(BackgroundJob* job);
  // Checkpoints the idle jobs that need it (paused, preempted, stopped,
  // shutting down), or the running one when checkpoint_every has passed.
  void MaybeCheckpoint(Clock::time_point now);
  void Checkpoint(Entry& entry);
  void LogProgress(Clock::time_point now);
  void ArmTimer(Clock::time_point at);
  void MaybeFinishShutdown();
  Entry* Find(const BackgroundJob* job);

  asio::io_context& io_;
  Options options_;
  BackgroundRate rate_;
  std::vector<Entry> entries_;
  asio::steady_timer timer_;
  std::optional<Clock::time_point> timer_at_;
  Clock::time_point last_checkpoint_;
  bool checkpointing_ = false;
  bool shutting_down_ = false;
  Done shutdown_done_;
  uint64_t bytes_done_[3] = {0, 0, 0};
  Lifetime lifetime_;
};

}  // namespace dst::integrity
