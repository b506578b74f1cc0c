// ScrubJob: a volume's scrub as a BackgroundJob (docs/redundancy.md, "Scrub"). It walks the
// volume from a cursor to its end in steps of about 1 MiB; each step asks the volume to verify
// every written block of the step on every copy (ScrubTarget::ScrubBlocks) and adds what it
// found to the scrub's tally. The cursor it checkpoints is the first block of the oldest step
// still in flight: every block below it was scrubbed.
//
// The job knows nothing of copies, tables or superblocks: the volume does the reading, the
// repairing, the counting and the durable record; the job keeps the order and the progress.
//
// Threading: the event-loop thread only (as BackgroundJobs).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "aggregator/integrity/background_jobs.h"
#include "aggregator/integrity/superblock.h"
#include "common/callback.h"

namespace dst::integrity {

// What scrubbing some blocks found.
struct ScrubTally {
  uint64_t blocks = 0;         // written blocks verified (on every copy)
  uint64_t errors = 0;         // bad copies of blocks: a mismatch or a failed read
  uint64_t repaired = 0;       // bad copies rewritten from a copy that verifies
  uint64_t unrecoverable = 0;  // blocks no copy of which verifies

  ScrubTally& operator+=(const ScrubTally& other);
};

class ScrubJob;

// What a scrub needs of its volume. (No `Done` alias here: the volume has its own.)
class ScrubTarget {
 public:
  using BlocksDone = std::function<void(ScrubTally tally, int err)>;

  virtual ~ScrubTarget() = default;
  virtual const std::string& name() const = 0;
  virtual uint64_t scrub_blocks() const = 0;  // blocks of the volume
  virtual uint32_t scrub_block_size() const = 0;
  // Verifies every written block of [first, first + count) on every current copy and, when
  // `repair`, rewrites a bad copy from one that verifies; `done` once the repairs are done.
  virtual void ScrubBlocks(uint64_t first, uint64_t count, bool repair, BlocksDone done) = 0;
  // Blocks below `cursor` are scrubbed, and `errors` bad copies were found so far: durable.
  virtual void ScrubCheckpoint(uint64_t cursor, uint64_t errors, Callback<void(int err)> done) = 0;
  // The scrub went through the whole volume: its result is made durable.
  virtual void ScrubCompleted(uint64_t errors, Callback<void(int err)> done) = 0;
  // The job is being destroyed (completed, stopped or failed).
  virtual void ScrubGone(const ScrubJob* job) = 0;
  // Calls `done(0)` from the event loop, later.
  virtual void Later(Callback<void(int err)> done) = 0;
};

class ScrubJob final : public BackgroundJob {
 public:
  // A scrub runs after every resync and rebuild.
  static constexpr int kPriority = 1 << 20;
  static constexpr uint64_t kStepBytes = uint64_t{1} << 20;

  // Scrubs [cursor, end) of the volume; `errors`: found before `cursor` (a resumed scrub).
  ScrubJob(ScrubTarget& target, ScrubMode mode, uint64_t cursor, uint64_t errors);
  ~ScrubJob() override;

  Kind kind() const override { return Kind::kScrub; }
  std::string what() const override;
  int priority() const override { return kPriority; }
  std::string detail() const override;
  bool HasStep() const override { return next_ < target_.scrub_blocks(); }
  void Step(StepDone done) override;
  uint64_t done_bytes() const override;
  uint64_t total_bytes() const override;
  void Checkpoint(Done done) override;
  void Complete(Done done) override;

  // No more checkpoints or completion record: the scrub was stopped, and its record cleared.
  void Forget() { forgotten_ = true; }
  ScrubMode mode() const { return mode_; }
  uint64_t errors() const { return errors_; }

 private:
  // Every block below it was scrubbed.
  uint64_t Cursor() const;

  ScrubTarget& target_;
  ScrubMode mode_;
  uint64_t start_;                // the cursor it resumed from
  uint64_t next_;                 // the first block of the next step
  uint64_t finished_ = 0;         // blocks of steps that finished
  std::set<uint64_t> in_flight_;  // first blocks of the steps in flight
  uint64_t errors_;
  bool forgotten_ = false;
};

}  // namespace dst::integrity
