// ResyncJob: the BackgroundJob that brings one copy (slot) of a mirror or
// raid10 set back to current (docs/redundancy.md, "Resync and rebuild").
//
//   - bitmap resync: copies the regions set in the set's missed-write map
//     (the union over its current copies, as loaded at Open) and the regions
//     whose write-intent bit the returning copy itself holds (writes in
//     flight when it dropped out). Every block of such a region is written:
//     a block whose entry is zero as zeros, the others from a current copy.
//   - full rebuild: every block of the set whose checksum-table entry is not
//     zero, so its time follows what was written, not the capacity.
//
// Steps of at most 1 MiB (and never across a raid10 chunk) take the volume's
// range lock exclusively on their blocks, so client I/O already waiting on
// them goes first and none starts meanwhile. Each source block is verified
// against the table before it is written; one that fails is read from the
// other current copies, and when none verifies it is counted
// (resync_unrecoverable), logged with its volume offset and left as it is on
// the target, and the job goes on. The table pages of a step's blocks are
// written through the set (the target is a written copy), so the target's
// table matches its data.
//
// The target is a catching-up copy for the whole job: every client write
// reaches it, and it serves no reads (its table pages beyond the copied range
// are old). Checkpoint() flushes the target and records the cursor (and the
// slot's state resyncing or rebuilding) in the superblocks; Complete()
// flushes it, records it active in a new generation, makes it current, and
// when its set is whole again clears the set's missed-write maps (map epoch
// recorded once every set's maps are clear).
//
// A replacement (`member replace`) is a rebuild whose target is the set's
// replacement copy: its checkpoints only flush the target (the superblocks
// keep naming the old member until the end), and Complete() hands over to
// the volume, which gives the slot the new member in one superblock update.
//
// Threading: the event-loop thread only; the volume outlives its jobs.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "aggregator/integrity/background_jobs.h"
#include "aggregator/volume/member_io.h"
#include "common/lifetime.h"

namespace dst::integrity {

class ChecksummedVolume;

// What to copy, as CatchUp decided it.
struct ResyncPlan {
  uint32_t slot = 0;
  bool full = false;  // rebuild: every written block; else the regions below
  // `member replace`: the target is the set's replacement copy (MirrorSet::replacement_copy),
  // rebuilt in full beside the slot's own copy, which keeps serving; nothing of it is durable
  // before Complete() (a restart starts the replacement over).
  bool replace = false;
  std::string reason;  // detail(): "partial: ..." or "full: ..."
  // Ranges of data blocks of the set, [first, end), ascending: the regions to
  // resync, or for a rebuild everything from the cursor on (and regions below
  // it that the copy's own intent bits name).
  struct Range {
    uint64_t first;
    uint64_t end;
  };
  std::vector<Range> ranges;
};

class ResyncJob final : public BackgroundJob {
 public:
  static constexpr uint64_t kStepBytes = uint64_t{1} << 20;

  ResyncJob(ChecksummedVolume& volume, ResyncPlan plan);
  ~ResyncJob() override;

  // A rebuild's total (the written blocks of its ranges) is counted first,
  // from the table; a resync's is known. `done` once the job can be added.
  void Prepare(Done done);

  Kind kind() const override { return plan_.full ? Kind::kRebuild : Kind::kResync; }
  std::string what() const override;
  // The fewer current copies the set has, the sooner (scrubs go last).
  int priority() const override;
  std::string detail() const override { return plan_.reason; }
  bool HasStep() const override;
  void Step(StepDone done) override;
  uint64_t done_bytes() const override { return done_bytes_; }
  uint64_t total_bytes() const override { return std::max(total_bytes_, done_bytes_); }
  void Checkpoint(Done done) override;
  void Complete(Done done) override;

  // Data blocks of the set below which every step has finished.
  uint64_t cursor() const;
  // The slot it brings back (or replaces), and the copy of its set it writes.
  uint32_t slot() const { return plan_.slot; }
  uint32_t copy() const { return copy_; }
  bool replace() const { return plan_.replace; }
  // Whether `job` is a replacement's rebuild (for BackgroundJobs::Any and Cancel).
  static bool IsReplacement(const BackgroundJob& job);

 private:
  struct StepState;
  struct Piece {
    uint64_t first;
    uint64_t count;
  };
  Piece NextPiece();
  void Locked(const std::shared_ptr<StepState>& step);
  void Pinned(const std::shared_ptr<StepState>& step);
  void ReadRun(const std::shared_ptr<StepState>& step, uint64_t at, uint64_t count,
               std::function<void()> next);
  // A block that failed on the source: read from the other current copies.
  void Fallback(const std::shared_ptr<StepState>& step, uint64_t index, size_t next_copy,
                std::function<void()> next);
  void WriteTarget(const std::shared_ptr<StepState>& step);
  void WriteTable(const std::shared_ptr<StepState>& step, int err);
  void Finish(const std::shared_ptr<StepState>& step, int err);
  void CountWritten(size_t range, uint64_t from, Done done);
  void FlushTarget(Done done);
  void ClearMaps(Done done);

  ChecksummedVolume& volume_;
  ResyncPlan plan_;
  uint32_t set_;
  uint32_t copy_;
  uint64_t set_blocks_;        // blocks of the set the layout uses
  uint64_t chunk_blocks_ = 0;  // raid10: blocks per chunk; 0: no bound
  size_t range_ = 0;           // the next piece: in plan_.ranges[range_] at pos_
  uint64_t pos_ = 0;
  uint64_t pieces_ = 0;
  std::set<uint64_t> in_flight_;  // first blocks of the steps in flight
  uint64_t done_bytes_ = 0;
  uint64_t total_bytes_ = 0;
  // A replacement's target, and whether the volume still stands (the job may outlive its steps
  // only inside the volume's destructor): a replace job that ends without Complete() ends the
  // replacement.
  volume::MemberTarget* replacement_ = nullptr;
  bool completed_ = false;
  LifetimeWatch volume_alive_;
  Lifetime lifetime_;  // last: expires first
};

}  // namespace dst::integrity
