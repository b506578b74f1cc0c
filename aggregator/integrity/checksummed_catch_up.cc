// Copies of a ChecksummedVolume that come back (mirror and raid10): at Open,
// each slot CatchUp() named becomes a catching-up copy and gets a ResyncJob
// (docs/redundancy.md, "Resync and rebuild").
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/resync_job.h"
#include "common/join.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

constexpr uint64_t kBitmapPiece = uint64_t{1} << 20;

// The regions whose bit is set in `bits`, below `regions`.
std::vector<uint64_t> SetBits(const std::vector<uint8_t>& bits, uint64_t regions) {
  std::vector<uint64_t> out;
  for (uint64_t r = 0; r < regions && r / 8 < bits.size(); ++r)
    if ((bits[r / 8] >> (r % 8)) & 1) out.push_back(r);
  return out;
}

}  // namespace

void ChecksummedVolume::CatchUp(uint32_t slot, bool full, std::string reason) {
  catch_ups_.push_back({slot, full, std::move(reason)});
}

// A copy that cannot be brought back stays out (logged); the volume opens anyway.
void ChecksummedVolume::StartCatchUps(Done done) {
  auto join = MakeJoin(std::move(done));
  for (const PendingCatchUp& c : std::exchange(catch_ups_, {}))
    StartCatchUp(c, [part = Part(join)](int) { part(0); });
  join->Arrive(0);
}

// Reads the copy's own write-intent bitmap (regions it may hold writes the
// others do not), plans the job, records the slot resyncing or rebuilding and
// adds the job. `done` hears 0 once the job is added, or why the copy stays
// out (logged).
void ChecksummedVolume::StartCatchUp(const PendingCatchUp& c, Done done) {
  const uint32_t k = copies_per_set();
  const uint32_t s = c.slot / k;
  const uint32_t copy = c.slot % k;
  if (!redundant() || c.slot >= copies_.size() || copies_[c.slot] == nullptr ||
      sets_[s]->role(copy) != volume::CopyRole::kOut) {
    LOG_WARNING("volume %s: slot %u cannot be resynced: it is not a present, stale copy",
                name().c_str(), c.slot);
    return done(0);
  }
  const Area& bitmap = geometries_[s].bitmap;
  auto own = std::make_shared<std::vector<uint8_t>>(bitmap.size);
  auto join =
      MakeJoin([this, alive = lifetime_.Watch(), c, own, done = std::move(done)](int err) mutable {
        if (alive.expired()) return;
        if (err != 0) {
          LOG_WARNING(
              "volume %s: slot %u: its own write-intent bitmap cannot be read (%s): "
              "resyncing without it",
              name().c_str(), c.slot, std::strerror(err));
          std::fill(own->begin(), own->end(), 0);
        }
        PlanCatchUp(c, SetBits(*own, geometries_[c.slot / copies_per_set()].regions()),
                    std::move(done));
      });
  const uint64_t piece = std::min<uint64_t>(kBitmapPiece, members_[s]->capabilities().max_request);
  for (uint64_t at = 0; at < bitmap.size; at += piece) {
    auto io = std::make_shared<volume::MemberIo>();
    io->op = volume::MemberOp::kRead;
    io->offset = bitmap.offset + at;
    io->length = std::min(piece, bitmap.size - at);
    io->data = own->data() + at;
    io->only_copy = static_cast<int32_t>(copy);
    io->done = Part(join);
    members_[s]->Submit(std::move(io));
  }
  join->Arrive(0);
}

void ChecksummedVolume::PlanCatchUp(const PendingCatchUp& c, std::vector<uint64_t> own, Done done) {
  if (closing_) {  // a copy that came back while the volume served, as it stops
    LOG_WARNING("volume %s: slot %u stays out: the volume is stopping", name().c_str(), c.slot);
    return done(ESHUTDOWN);
  }
  const uint32_t k = copies_per_set();
  const uint32_t s = c.slot / k;
  const uint64_t region_blocks = view_.geometry.params.region_size / block_size_;
  const MemberState was = view_.member_states[c.slot];
  const bool full = c.full || was == MemberState::kRebuilding;
  const MemberState state = full ? MemberState::kRebuilding : MemberState::kResyncing;
  // A job of the same kind resumes where its last checkpoint left it.
  const uint64_t cursor = was == state ? view_.cursor[c.slot] : 0;
  ResyncPlan plan{.slot = c.slot, .full = full, .reason = {}, .ranges = {}};
  std::set<uint64_t> regions(own.begin(), own.end());
  uint64_t missed = 0;
  if (full) {
    // Regions its own bits name below the cursor: a crash may have left them
    // different from the current copies after they were copied.
    for (uint64_t r : regions)
      if (r * region_blocks < cursor)
        plan.ranges.push_back({r * region_blocks, (r + 1) * region_blocks});
    plan.ranges.push_back({cursor, UINT64_MAX});
    // Assembly sees a rebuilding slot as stale; the superblocks say what it needs.
    plan.reason = c.full ? "full: " + c.reason
                         : "full: the superblocks record a rebuild in progress since event " +
                               std::to_string(view_.stale_since[c.slot]);
  } else {
    for (uint64_t r : intent_.MissedRegions(s)) {
      ++missed;
      if ((r + 1) * region_blocks > cursor) regions.insert(r);
    }
    for (uint64_t r : regions)
      plan.ranges.push_back({std::max(r * region_blocks, r == cursor / region_blocks ? cursor : 0),
                             (r + 1) * region_blocks});
    plan.reason = "partial: " + std::to_string(missed) + " regions missed since event " +
                  std::to_string(view_.stale_since[c.slot]);
  }
  LOG_INFO("volume %s: slot %u %s: %s (%s)%s", name().c_str(), c.slot,
           copies_[c.slot]->name().c_str(), full ? "rebuilding" : "resyncing", plan.reason.c_str(),
           cursor != 0
               ? (", resuming at data offset " + std::to_string(cursor * block_size_)).c_str()
               : "");
  sets_[s]->SetRole(c.slot % k, volume::CopyRole::kCatchingUp);
  QueueSlotChange(c.slot, state, cursor,
                  [this, alive = lifetime_.Watch(), plan = std::move(plan),
                   done = std::move(done)](int err) mutable {
                    if (alive.expired()) return;
                    if (err != 0) {
                      LOG_ERROR("volume %s: slot %u stays stale: recording it %s failed: %s",
                                name().c_str(), plan.slot, plan.full ? "rebuilding" : "resyncing",
                                std::strerror(err));
                      sets_[plan.slot / copies_per_set()]->SetRole(plan.slot % copies_per_set(),
                                                                   volume::CopyRole::kOut);
                      return done(err);
                    }
                    AddResyncJob(std::move(plan), std::move(done));
                  });
}

void ChecksummedVolume::AddResyncJob(ResyncPlan plan, Done done) {
  auto job = std::make_shared<std::unique_ptr<ResyncJob>>(
      std::make_unique<ResyncJob>(*this, std::move(plan)));
  (*job)->Prepare([this, alive = lifetime_.Watch(), job, done = std::move(done)](int err) {
    if (alive.expired()) return;
    if (err != 0)
      LOG_ERROR("%s: counting the written blocks: %s; the copy stays out", (*job)->what().c_str(),
                std::strerror(err));
    else if (closing_)  // the runner is shutting down: it takes no job now
      LOG_WARNING("%s: the volume is stopping; the copy stays out", (*job)->what().c_str());
    if (err != 0 || closing_) {
      // Not written as a catching-up copy without a job to bring it back; the superblocks say
      // resyncing or rebuilding, which the next start (or return) takes up.
      const uint32_t slot = (*job)->slot();
      sets_[slot / copies_per_set()]->SetRole((*job)->copy(), volume::CopyRole::kOut);
      return done(err != 0 ? err : ESHUTDOWN);
    }
    jobs_.Add(std::move(*job));
    done(0);
  });
}

}  // namespace dst::integrity
