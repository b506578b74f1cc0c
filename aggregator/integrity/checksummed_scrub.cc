// Scrub of ChecksummedVolume (docs/redundancy.md, "Scrub"): the ScrubTarget a ScrubJob drives,
// and the commands that start, pause, resume and stop it. A step reads every written block
// (non-zero table entry) of about 1 MiB on every current copy, write-mostly ones included, under
// the range's shared lock and with its table pages pinned, and verifies each against its entry.
// Repairs go through Repair(), which takes the block's exclusive lock once the step's lock is
// released and rewrites the copy only if the good data still matches the entry.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "aggregator/integrity/checksummed_volume.h"
#include "common/join.h"
#include "common/log.h"

namespace dst::integrity {

// One copy's read of one block of a step.
struct ChecksummedVolume::ScrubRead {
  uint64_t block = 0;  // volume block
  BlockRef ref{};
  int32_t copy = -1;  // -1: the member itself (linear, stripe)
  int err = 0;
  bool verified = false;
  std::shared_ptr<std::vector<uint8_t>> data;
};

std::vector<int32_t> ChecksummedVolume::ScrubCopies(uint32_t member) const {
  if (!redundant()) return {-1};
  std::vector<int32_t> copies;
  for (uint32_t c : CurrentCopies(member))
    copies.push_back(static_cast<int32_t>(c));
  return copies;
}

// One step of a scrub, from its lock to its verdicts.
struct ChecksummedVolume::ScrubStep {
  uint64_t first = 0;
  bool repair = false;
  std::vector<BlockRef> refs;
  std::vector<PageKey> pages;
  RangeLock::Id lock = 0;
  BlocksDone done;
};

void ChecksummedVolume::ScrubBlocks(uint64_t first, uint64_t count, bool repair, BlocksDone done) {
  auto step = std::make_shared<ScrubStep>();
  step->first = first;
  step->repair = repair;
  // Never from inside the call (BackgroundJob's contract): a step of cached, unwritten blocks
  // would otherwise finish at once.
  step->done = [this, done = std::move(done)](ScrubTally tally, int err) {
    asio::post(io_, [done, tally, err] { done(tally, err); });
  };
  lock_.Acquire(first, count, false,
                [this, alive = lifetime_.Watch(), step, count](RangeLock::Id id) {
                  if (alive.expired()) return;
                  step->lock = id;
                  step->refs = MapBlocks(step->first, count);
                  step->pages = PagesOf(step->refs);
                  table_.Pin(step->pages, [this, alive, step](int err) {
                    if (!alive.expired()) ScrubPinned(step, err);
                  });
                });
}

// Reads every current copy of each written block of the step.
void ChecksummedVolume::ScrubPinned(const std::shared_ptr<ScrubStep>& step, int err) {
  auto finish = [this, step] {
    table_.Unpin(step->pages);
    lock_.Release(step->lock);
  };
  if (err != 0) {
    finish();
    return step->done({}, err);
  }
  auto reads = std::make_shared<std::vector<ScrubRead>>();
  for (uint64_t i = 0; i < step->refs.size(); ++i) {
    if (EntryIsZero(step->refs[i])) continue;
    for (int32_t copy : ScrubCopies(step->refs[i].member))
      reads->push_back({step->first + i, step->refs[i], copy, 0, false,
                        std::make_shared<std::vector<uint8_t>>(block_size_)});
  }
  auto join = MakeJoin([this, alive = lifetime_.Watch(), step, reads, finish](int) {
    if (alive.expired()) return;
    for (ScrubRead& r : *reads)
      r.verified = r.err == 0 && Verify(r.block, r.ref, r.data->data());
    finish();  // the verdicts are in: repairs take the blocks exclusively
    ScrubVerify(*reads, step->repair, step->done);
  });
  for (ScrubRead& r : *reads) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = r.ref.block * block_size_;
    io->length = block_size_;
    io->data = r.data->data();
    io->only_copy = r.copy;
    io->done = [&r, part = Part(join)](int read_err) {  // `reads` outlives the join
      r.err = read_err;
      part(0);
    };
    data_areas_[r.ref.member]->Submit(std::move(io));
  }
  join->Arrive(0);
}

void ChecksummedVolume::ScrubReport(const ScrubRead& r) const {
  std::string copy;
  if (r.copy >= 0) {
    const uint32_t slot = r.ref.member * copies_per_set() + static_cast<uint32_t>(r.copy);
    copy = " on member " + std::to_string(slot) + " " + copies_[slot]->name();
  }
  if (r.err != 0)
    LOG_WARNING("volume %s: scrub: read of %s%s failed: %s", name().c_str(),
                BlockPlace(r.block, r.ref).c_str(), copy.c_str(), std::strerror(r.err));
  else
    LOG_WARNING("volume %s: scrub: checksum mismatch at %s%s", name().c_str(),
                BlockPlace(r.block, r.ref).c_str(), copy.c_str());
}

// `reads` holds the copies of each block next to each other, in block order.
void ChecksummedVolume::ScrubVerify(const std::vector<ScrubRead>& reads, bool repair,
                                    BlocksDone done) {
  auto tally = std::make_shared<ScrubTally>();
  auto join = MakeJoin([this, alive = lifetime_.Watch(), tally, done = std::move(done)](int) {
    if (alive.expired()) return;
    scrub_tally_ += *tally;
    done(*tally, 0);
  });
  for (size_t i = 0; i < reads.size();) {
    size_t end = i;
    const ScrubRead* good = nullptr;
    for (; end < reads.size() && reads[end].block == reads[i].block; ++end)
      if (reads[end].verified && good == nullptr) good = &reads[end];
    ++tally->blocks;
    for (size_t j = i; j < end; ++j) {
      const ScrubRead& r = reads[j];
      if (r.verified) continue;
      ++tally->errors;
      ScrubReport(r);
      if (!repair || good == nullptr || r.copy < 0) continue;
      Repair(r.block, r.ref, static_cast<uint32_t>(r.copy), good->data,
             [tally, part = Part(join)](bool repaired) {
               tally->repaired += repaired ? 1 : 0;
               part(0);
             });
    }
    if (good == nullptr) {
      ++tally->unrecoverable;
      LOG_ERROR("volume %s: scrub: %s verifies on no copy: unrecoverable", name().c_str(),
                BlockPlace(reads[i].block, reads[i].ref).c_str());
    }
    i = end;
  }
  join->Arrive(0);
}

void ChecksummedVolume::ScrubCheckpoint(uint64_t cursor, uint64_t errors, Done done) {
  scrub_.cursor = cursor;
  scrub_.errors = errors;
  SaveScrub(std::move(done));
}

void ChecksummedVolume::ScrubCompleted(uint64_t errors, Done done) {
  LOG_INFO("volume %s: scrub (%s) complete: %llu errors", name().c_str(),
           std::string(ScrubModeName(scrub_.mode)).c_str(),
           static_cast<unsigned long long>(errors));
  scrub_ = {};
  scrub_.last_result = errors == 0 ? ScrubResult::kClean : ScrubResult::kErrors;
  scrub_.last_completed = std::max<uint64_t>(1, static_cast<uint64_t>(std::time(nullptr)));
  SaveScrub(std::move(done));
}

void ChecksummedVolume::ScrubGone(const ScrubJob* job) {
  if (scrub_job_ == job) scrub_job_ = nullptr;
}

void ChecksummedVolume::Later(Done done) {
  asio::post(io_, [done = std::move(done)] { done(0); });
}

void ChecksummedVolume::SaveScrub(Done done) {
  if (!done)
    done = [this, alive = lifetime_.Watch()](int err) {
      if (!alive.expired() && err != 0)
        LOG_WARNING("volume %s: recording the scrub: %s", name().c_str(), std::strerror(err));
    };
  if (!redundant()) return Later(std::move(done));
  QueueUpdate(std::nullopt, std::move(done));
}

void ChecksummedVolume::AddScrubJob() {
  ScrubTarget& target = *this;  // a private base: converted here, where it is accessible
  auto job = std::make_unique<ScrubJob>(target, scrub_.mode, scrub_.cursor, scrub_.errors);
  scrub_job_ = job.get();
  jobs_.Add(std::move(job), scrub_.paused);
}

void ChecksummedVolume::ResumeRecordedScrub() {
  if (scrub_.mode == ScrubMode::kNone) return;
  LOG_INFO("volume %s: resuming the scrub (%s) at block %llu%s", name().c_str(),
           std::string(ScrubModeName(scrub_.mode)).c_str(),
           static_cast<unsigned long long>(scrub_.cursor), scrub_.paused ? ", paused" : "");
  AddScrubJob();
}

Status ChecksummedVolume::StartScrub(std::optional<ScrubMode> mode) {
  if (superseded_) return Status::Error(EROFS, "volume " + name() + " was fenced by a newer owner");
  if (!open_ || closing_) return Status::Error(ESHUTDOWN, "volume " + name() + " is not open");
  const ScrubMode m = mode.value_or(redundant() ? ScrubMode::kRepair : ScrubMode::kCheck);
  if (m == ScrubMode::kNone) return Status::Invalid("scrub mode none");
  if (m == ScrubMode::kRepair && !redundant())
    return Status::Invalid(std::string(volume::LayoutKindName(view_.layout)) + " volume " + name() +
                           " has no copies to repair from: scrub it with check");
  if (jobs_.Has(BackgroundJob::Kind::kScrub))
    return Status::Error(EBUSY, "a scrub of volume " + name() + " is already under way");
  scrub_.mode = m;
  scrub_.paused = false;
  scrub_.cursor = 0;
  scrub_.errors = 0;
  AddScrubJob();
  SaveScrub();
  LOG_INFO("volume %s: scrub (%s) started", name().c_str(), std::string(ScrubModeName(m)).c_str());
  return Status::Ok();
}

Status ChecksummedVolume::PauseScrub() {
  if (!jobs_.Pause(BackgroundJob::Kind::kScrub))
    return Status::Error(ENOENT, "no scrub under way on volume " + name());
  scrub_.paused = true;
  SaveScrub();
  LOG_INFO("volume %s: scrub paused", name().c_str());
  return Status::Ok();
}

Status ChecksummedVolume::ResumeScrub() {
  if (!jobs_.Resume(BackgroundJob::Kind::kScrub))
    return Status::Error(ENOENT, "no scrub under way on volume " + name());
  scrub_.paused = false;
  SaveScrub();
  LOG_INFO("volume %s: scrub resumed", name().c_str());
  return Status::Ok();
}

Status ChecksummedVolume::StopScrub() {
  if (!jobs_.Stop(BackgroundJob::Kind::kScrub))
    return Status::Error(ENOENT, "no scrub under way on volume " + name());
  if (scrub_job_ != nullptr) scrub_job_->Forget();
  scrub_job_ = nullptr;
  scrub_.mode = ScrubMode::kNone;
  scrub_.paused = false;
  scrub_.cursor = 0;
  scrub_.errors = 0;
  SaveScrub();
  LOG_INFO("volume %s: scrub stopped", name().c_str());
  return Status::Ok();
}

Status ChecksummedVolume::SetRateLimits(RateLimits limits) {
  DST_RETURN_IF_ERROR(CheckRateLimits(limits));
  jobs_.SetLimits(limits);
  LOG_INFO("volume %s: background rate %llu to %llu bytes/s", name().c_str(),
           static_cast<unsigned long long>(limits.min_bytes_per_second),
           static_cast<unsigned long long>(limits.max_bytes_per_second));
  return Status::Ok();
}

}  // namespace dst::integrity
