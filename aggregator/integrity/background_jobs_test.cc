// BackgroundJobs with scripted jobs on a real event loop (rates high enough
// that the throttle never makes a step wait): which job's steps run, when
// jobs are checkpointed, completed, paused, stopped, and how shutdown ends.
#include "aggregator/integrity/background_jobs.h"

#include <doctest/doctest.h>

#include "common/lifetime.h"

#include <cerrno>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/run_until.h"
#include "tests/harness/stderr_capture.h"

namespace dst::integrity::background_jobs_test {
namespace {

using namespace std::chrono_literals;
using Kind = BackgroundJob::Kind;

constexpr uint64_t kStepBytes = 1 << 20;

// Steps of 1 MiB; `trace` gets "NAME:step N" as each starts, and "NAME:checkpoint C" (C = steps
// done) and "NAME:complete" as they are asked.
class ScriptedJob final : public BackgroundJob {
 public:
  ScriptedJob(asio::io_context& io, std::vector<std::string>* trace, std::string name, Kind kind,
              int priority, int steps)
      : io_(io),
        trace_(trace),
        name_(std::move(name)),
        kind_(kind),
        priority_(priority),
        steps_(steps) {}

  Kind kind() const override { return kind_; }
  std::string what() const override { return name_; }
  int priority() const override { return priority_; }
  bool HasStep() const override { return started_ < steps_; }
  void Step(StepDone done) override {
    trace_->push_back(name_ + ":step " + std::to_string(started_++));
    const int err = fail_step == started_ - 1 ? EIO : 0;
    if (hold) {
      held_.push_back([this, done, err] { Finish(done, err); });
      return;
    }
    asio::post(io_, [this, done, err] { Finish(done, err); });
  }
  uint64_t done_bytes() const override { return finished_ * kStepBytes; }
  uint64_t total_bytes() const override { return steps_ * kStepBytes; }
  void Checkpoint(Done done) override {
    trace_->push_back(name_ + ":checkpoint " + std::to_string(finished_));
    // As a real job's: its answer is dropped once the job is gone.
    auto answer = [done, alive = lifetime_.Watch()] {
      if (!alive.expired()) done(0);
    };
    if (checkpoint_hold != nullptr) return checkpoint_hold->push_back(answer);
    asio::post(io_, answer);
  }
  void Complete(Done done) override {
    trace_->push_back(name_ + ":complete");
    asio::post(io_, [done] { done(0); });
  }

  void ReleaseHeld() {
    hold = false;
    for (auto& finish : std::exchange(held_, {}))
      asio::post(io_, finish);
  }
  // The oldest held step finishes.
  void ReleaseOne() {
    asio::post(io_, held_.front());
    held_.erase(held_.begin());
  }
  size_t held() const { return held_.size(); }

  bool hold = false;  // steps wait for ReleaseHeld()
  // Checkpoints wait there (outside the job, which may be gone) until the test runs them.
  std::vector<std::function<void()>>* checkpoint_hold = nullptr;
  int fail_step = -1;
  uint64_t moved_per_step = kStepBytes;  // what the throttle is charged per step

 private:
  void Finish(const StepDone& done, int err) {
    if (err == 0) ++finished_;
    done(err == 0 ? kStepBytes : 0, err == 0 ? moved_per_step : 0, err);
  }

  asio::io_context& io_;
  std::vector<std::string>* trace_;
  std::string name_;
  Kind kind_;
  int priority_;
  int steps_;
  int started_ = 0;
  int finished_ = 0;
  std::vector<std::function<void()>> held_;
  Lifetime lifetime_;  // last: expires first
};

struct Rig {
  Rig() : Rig(FastOptions()) {}
  explicit Rig(BackgroundJobs::Options options) : jobs(io, options) {}

  static BackgroundJobs::Options FastOptions() {
    BackgroundJobs::Options o;
    o.limits = {uint64_t{1} << 40, uint64_t{1} << 40};  // never waits
    o.checkpoint_every = 1h;                            // only when the runner must
    o.progress_every = 1h;
    return o;
  }

  // `hold` and `fail_step` are set before the runner sees the job: Add() starts steps at once.
  ScriptedJob* Add(const std::string& name, Kind kind, int priority, int steps, bool hold = false,
                   int fail_step = -1, uint64_t moved_per_step = kStepBytes) {
    auto job = std::make_unique<ScriptedJob>(io, &trace, name, kind, priority, steps);
    job->hold = hold;
    job->fail_step = fail_step;
    job->moved_per_step = moved_per_step;
    ScriptedJob* raw = job.get();
    jobs.Add(std::move(job));
    return raw;
  }
  bool RunUntil(const std::function<bool()>& until) {
    return dst::RunUntil(io, until, 10s) == RunResult::kDone;
  }
  bool Traced(const std::string& line) const {
    return std::find(trace.begin(), trace.end(), line) != trace.end();
  }
  size_t IndexOf(const std::string& line) const {
    return std::find(trace.begin(), trace.end(), line) - trace.begin();
  }
  bool Idle() const { return jobs.Status().empty(); }

  asio::io_context io;
  std::vector<std::string> trace;
  BackgroundJobs jobs;
};

TEST_CASE("a job's steps all run, then it is completed once and dropped") {
  Rig rig;
  test::StderrCapture log;
  rig.Add("rebuilding v slot 1", Kind::kRebuild, 0, 5);
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(rig.trace ==
        std::vector<std::string>{"rebuilding v slot 1:step 0", "rebuilding v slot 1:step 1",
                                 "rebuilding v slot 1:step 2", "rebuilding v slot 1:step 3",
                                 "rebuilding v slot 1:step 4", "rebuilding v slot 1:complete"});
  CHECK(rig.jobs.bytes_done(Kind::kRebuild) == 5 * kStepBytes);
  CHECK(log.Text().find("rebuilding v slot 1: done (5 MiB)") != std::string::npos);
}

TEST_CASE("the lowest priority runs first; a resync preempts a running scrub") {
  Rig rig;
  ScriptedJob* scrub = rig.Add("scrub", Kind::kScrub, 100, 6, /*hold=*/true);
  REQUIRE(rig.RunUntil([&] { return scrub->held() > 0; }));
  rig.Add("resync", Kind::kResync, 0, 3);
  const size_t scrub_steps_before = std::count_if(
      rig.trace.begin(), rig.trace.end(), [](auto& l) { return l.rfind("scrub:step", 0) == 0; });
  scrub->ReleaseHeld();
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  // No scrub step started between the resync's arrival and its completion.
  const size_t resync_done = rig.IndexOf("resync:complete");
  REQUIRE(resync_done < rig.trace.size());
  size_t scrub_steps_by_then = 0;
  for (size_t i = 0; i < resync_done; ++i)
    scrub_steps_by_then += rig.trace[i].rfind("scrub:step", 0) == 0;
  CHECK(scrub_steps_by_then == scrub_steps_before);
  // The preempted scrub recorded its progress, then finished after the resync.
  CHECK(rig.IndexOf("scrub:checkpoint " + std::to_string(scrub_steps_before)) < rig.trace.size());
  CHECK(rig.IndexOf("scrub:complete") > resync_done);
  CHECK(rig.jobs.bytes_done(Kind::kScrub) == 6 * kStepBytes);
}

TEST_CASE("a paused job takes no step and is checkpointed; resumed, it goes on") {
  Rig rig;
  ScriptedJob* scrub = rig.Add("scrub", Kind::kScrub, 100, 8, /*hold=*/true);
  REQUIRE(rig.RunUntil([&] { return scrub->held() > 0; }));
  CHECK(rig.jobs.Pause(Kind::kScrub));
  const size_t held = scrub->held();
  scrub->ReleaseHeld();
  REQUIRE(rig.RunUntil([&] { return rig.Traced("scrub:checkpoint " + std::to_string(held)); }));
  const size_t steps = rig.trace.size();
  rig.io.run_for(50ms);
  CHECK(rig.trace.size() == steps);  // nothing while paused
  const auto status = rig.jobs.Status();
  REQUIRE(status.size() == 1);
  CHECK(status[0].paused);
  CHECK_FALSE(status[0].running);
  CHECK(status[0].done_bytes == held * kStepBytes);
  CHECK(status[0].total_bytes == 8 * kStepBytes);
  CHECK(rig.jobs.Resume(Kind::kScrub));
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(rig.Traced("scrub:complete"));
  CHECK_FALSE(rig.jobs.Pause(Kind::kScrub));  // none left
}

TEST_CASE("a stopped job is checkpointed and dropped, never completed") {
  Rig rig;
  ScriptedJob* scrub = rig.Add("scrub", Kind::kScrub, 100, 8, /*hold=*/true);
  REQUIRE(rig.RunUntil([&] { return scrub->held() > 0; }));
  CHECK(rig.jobs.Stop(Kind::kScrub));
  CHECK_FALSE(rig.jobs.Has(Kind::kScrub));
  scrub->ReleaseHeld();
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(rig.trace.back().rfind("scrub:checkpoint", 0) == 0);
  CHECK_FALSE(rig.Traced("scrub:complete"));
}

TEST_CASE("a job whose last step ends during its checkpoint completes after it; shutdown ends") {
  BackgroundJobs::Options options = Rig::FastOptions();
  options.checkpoint_every = 0ms;  // the running job is checkpointed as soon as a step is done
  Rig rig(options);
  std::vector<std::function<void()>> checkpoints;
  ScriptedJob* job = rig.Add("resync", Kind::kResync, 0, 2, /*hold=*/true);
  job->checkpoint_hold = &checkpoints;
  REQUIRE(rig.RunUntil([&] { return job->held() == 2; }));
  job->ReleaseOne();
  REQUIRE(rig.RunUntil([&] { return checkpoints.size() == 1; }));
  job->ReleaseHeld();  // the last step ends while the checkpoint is under way
  rig.RunUntil([&] { return rig.Traced("resync:complete"); });
  CHECK_FALSE(rig.Traced("resync:complete"));
  for (auto& answer : std::exchange(checkpoints, {}))
    answer();
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(rig.Traced("resync:complete"));
  bool shut = false;
  rig.jobs.Shutdown([&](int) { shut = true; });
  CHECK(rig.RunUntil([&] { return shut; }));
  CHECK(checkpoints.empty());  // none of a job completing
}

TEST_CASE("a canceled job is dropped without a checkpoint; the others go on") {
  Rig rig;
  test::StderrCapture log;
  ScriptedJob* resync = rig.Add("resync", Kind::kResync, 0, 8, /*hold=*/true);
  rig.Add("scrub", Kind::kScrub, 100, 2);
  REQUIRE(rig.RunUntil([&] { return resync->held() > 0; }));
  CHECK(rig.jobs.Cancel([](const BackgroundJob& job) { return job.what() == "resync"; },
                        "its copy was failed"));
  CHECK_FALSE(
      rig.jobs.Cancel([](const BackgroundJob& job) { return job.what() == "resync"; }, "again"));
  resync->ReleaseHeld();
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(log.Text().find("resync: stopped: its copy was failed") != std::string::npos);
  CHECK(std::none_of(rig.trace.begin(), rig.trace.end(), [](const std::string& line) {
    return line.rfind("resync:checkpoint", 0) == 0;
  }));
  CHECK_FALSE(rig.Traced("resync:complete"));
  CHECK(rig.Traced("scrub:complete"));
}

TEST_CASE("a step that fails ends its job, logged; the other jobs go on") {
  Rig rig;
  test::StderrCapture log;
  rig.Add("resync", Kind::kResync, 0, 5, /*hold=*/false, /*fail_step=*/2);
  rig.Add("scrub", Kind::kScrub, 100, 2);
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(log.Text().find("resync: stopped: Input/output error") != std::string::npos);
  CHECK_FALSE(rig.Traced("resync:complete"));
  CHECK(rig.Traced("scrub:complete"));
}

TEST_CASE("shutdown waits for steps in flight and checkpoints every job, once") {
  Rig rig;
  ScriptedJob* resync = rig.Add("resync", Kind::kResync, 0, 10, /*hold=*/true);
  REQUIRE(rig.RunUntil([&] { return resync->held() > 0; }));
  int calls = 0, result = -1;
  rig.jobs.Shutdown([&](int err) {
    ++calls;
    result = err;
  });
  rig.io.run_for(20ms);
  CHECK(calls == 0);  // a step is still in flight
  const size_t held = resync->held();
  resync->ReleaseHeld();
  REQUIRE(rig.RunUntil([&] { return calls > 0; }));
  rig.io.run_for(20ms);
  CHECK(calls == 1);
  CHECK(result == 0);
  CHECK(rig.trace.back() == "resync:checkpoint " + std::to_string(held));
  CHECK_FALSE(rig.Traced("resync:complete"));
}

TEST_CASE("the throttle charges the data a step moves: steps over unwritten blocks are not held") {
  BackgroundJobs::Options options = Rig::FastOptions();
  options.limits = {kStepBytes, kStepBytes};  // 1 MiB/s, busy or idle
  Rig rig(options);
  rig.jobs.ClientStarted();  // a client request in flight throughout: the floor applies
  // 64 MiB covered, no data read: at 1 MiB/s charged by coverage it would take a minute.
  rig.Add("scrubbing v", Kind::kScrub, 100, 64, /*hold=*/false, /*fail_step=*/-1, /*moved=*/0);
  REQUIRE(rig.RunUntil([&] { return rig.Idle(); }));
  CHECK(rig.jobs.bytes_done(Kind::kScrub) == 64 * kStepBytes);
  // A job that moves a MiB per step waits for the floor after its first step.
  rig.Add("resync", Kind::kResync, 0, 64);
  rig.io.run_for(500ms);
  const auto steps = std::count_if(rig.trace.begin(), rig.trace.end(),
                                   [](auto& l) { return l.rfind("resync:step", 0) == 0; });
  CHECK(steps >= 1);
  CHECK(steps <= 2);
  bool shut = false;
  rig.jobs.Shutdown([&](int) { shut = true; });
  REQUIRE(rig.RunUntil([&] { return shut; }));
  rig.jobs.ClientFinished();
}

TEST_CASE("progress lines name the job, the share done, the rate and the ETA") {
  asio::io_context io;
  std::vector<std::string> trace;
  BackgroundJobs::Options o = Rig::FastOptions();
  o.progress_every = 0ms;
  BackgroundJobs jobs(io, o);
  test::StderrCapture log;
  auto job = std::make_unique<ScriptedJob>(io, &trace, "rebuilding v slot 1", Kind::kRebuild, 0, 8);
  job->hold = true;
  ScriptedJob* raw = job.get();
  jobs.Add(std::move(job));
  REQUIRE(dst::RunUntil(
              io, [&] { return raw->held() > 0; }, 10s) == RunResult::kDone);
  raw->ReleaseHeld();
  raw->hold = true;
  REQUIRE(dst::RunUntil(
              io, [&] { return raw->held() > 0; }, 10s) == RunResult::kDone);
  jobs.SetLimits(jobs.limits());  // a pass of the runner, with a step in flight
  CHECK(log.Text().find("rebuilding v slot 1: ") != std::string::npos);
  CHECK(log.Text().find("% (") != std::string::npos);
  raw->ReleaseHeld();
  REQUIRE(dst::RunUntil(
              io, [&] { return jobs.Status().empty(); }, 10s) == RunResult::kDone);
}

}  // namespace
}  // namespace dst::integrity::background_jobs_test
