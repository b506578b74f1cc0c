#include "aggregator/integrity/scrub_job.h"

#include <algorithm>
#include <utility>

namespace dst::integrity {

ScrubTally& ScrubTally::operator+=(const ScrubTally& other) {
  blocks += other.blocks;
  errors += other.errors;
  repaired += other.repaired;
  unrecoverable += other.unrecoverable;
  return *this;
}

ScrubJob::ScrubJob(ScrubTarget& target, ScrubMode mode, uint64_t cursor, uint64_t errors)
    : target_(target),
      mode_(mode),
      start_(std::min(cursor, target.scrub_blocks())),
      next_(start_),
      errors_(errors) {}

ScrubJob::~ScrubJob() {
  target_.ScrubGone(this);
}

std::string ScrubJob::what() const {
  return "scrubbing " + target_.name();
}

std::string ScrubJob::detail() const {
  return std::string(ScrubModeName(mode_)) + ", " + std::to_string(errors_) + " errors";
}

// Progress counts the whole volume, the part before a resumed cursor as done: the ETA is then
// that of what is left.
uint64_t ScrubJob::done_bytes() const {
  return (start_ + finished_) * target_.scrub_block_size();
}

uint64_t ScrubJob::total_bytes() const {
  return target_.scrub_blocks() * target_.scrub_block_size();
}

void ScrubJob::Step(StepDone done) {
  const uint64_t per_step = std::max<uint64_t>(1, kStepBytes / target_.scrub_block_size());
  const uint64_t first = next_;
  const uint64_t count = std::min(per_step, target_.scrub_blocks() - first);
  next_ += count;
  in_flight_.insert(first);
  target_.ScrubBlocks(first, count, mode_ == ScrubMode::kRepair,
                      [this, first, count, done = std::move(done)](ScrubTally tally, int err) {
                        in_flight_.erase(first);
                        errors_ += tally.errors;
                        if (err != 0) return done(0, 0, err);
                        finished_ += count;
                        const uint64_t block = target_.scrub_block_size();
                        done(count * block, tally.blocks * block, 0);
                      });
}

uint64_t ScrubJob::Cursor() const {
  return in_flight_.empty() ? next_ : *in_flight_.begin();
}

void ScrubJob::Checkpoint(Done done) {
  if (forgotten_) return target_.Later(std::move(done));
  target_.ScrubCheckpoint(Cursor(), errors_, std::move(done));
}

void ScrubJob::Complete(Done done) {
  if (forgotten_) return target_.Later(std::move(done));
  target_.ScrubCompleted(errors_, std::move(done));
}

}  // namespace dst::integrity
