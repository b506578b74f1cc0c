// StagedDevice: a volume served through its staging log (docs/staging-log.md, "Serving through
// the log"). Writes, trims and zeroes become log records and are acknowledged once the log is
// synced; a destager applies the records to the volume (the inner device) in sequence order,
// flushes it and records the destaged sequence D; reads take what the log holds newer than the
// volume from the log, the rest from the volume.
//
// In write-through mode (docs/staging-log.md §10, the log's superblock says which) the log only
// serves snapshots: each write, trim or zero takes a lock on its range, reads the range's old data
// from the volume, appends it as a before-image record, and once that is durable and indexed goes
// to the volume and is acknowledged when the volume has it. Nothing is destaged; space is
// reclaimed from the oldest records when an append does not fit.
//
// Threading: the device's calls, the index and every field below the log-thread line are the
// event loop's. The LogWriter and the LogDevice are used only on one dedicated log thread (their
// calls block on file I/O): appends with their group commit, reads of record payloads (for client
// reads and for the destager), SetDestaged and Release. Each log-thread job posts its result back
// to the loop. Jobs run in the order they are posted, which is what keeps a read of a record's
// payload ahead of a Release that frees its space.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <asio.hpp>

#include "aggregator/stagelog/log_device.h"
#include "aggregator/stagelog/log_index.h"
#include "aggregator/stagelog/log_replay.h"
#include "aggregator/stagelog/log_writer.h"
#include "aggregator/stagelog/snapshot_point.h"
#include "aggregator/volume/block_device.h"
#include "aggregator/volume/range_lock.h"
#include "common/status.h"

namespace dst::stagelog {

struct StagedOptions {
  std::string path;  // for status and log lines
  // Space is released once the log holds more than this fraction of its ring (or writes wait).
  double release_fill = 0.5;
  // Records applied to the volume between two flushes (and two updates of D).
  size_t destage_batch = 64;
  // A member error delays the next attempt at the same record: doubling from min to max.
  std::chrono::milliseconds retry_min{100};
  std::chrono::milliseconds retry_max{5000};
  // Retention (--log-retain, docs/staging-log.md "Snapshots"): records younger than this are not
  // destaged, so that every point of the last `retain` stays a snapshot; unless writes wait for
  // space. 0: destage at once.
  std::chrono::milliseconds retain{0};
  LogClock clock = SystemClockNanos;
};

// The snapshot points a staged volume has now: every acknowledged sequence from oldest to newest.
// A time is absent where the log no longer holds the record (its time is unknown).
struct SnapshotRange {
  uint64_t oldest_sequence = 0;
  std::optional<uint64_t> oldest_time;  // ns since the epoch
  uint64_t newest_sequence = 0;
  std::optional<uint64_t> newest_time;
};

// The log at `path` for volume `volume_uuid`, used in `mode`: a missing file is created with
// `create_size` bytes, a device without a staging log is formatted for the volume, and the log is
// replayed (ReplayLog; a log of another volume is refused). A log of the other mode is formatted
// anew for `mode` when it holds nothing pending (a write-through log never does; its snapshot
// points are lost, which a log line says), and refused while a write-back log holds records not
// yet destaged. Blocks; call before the event loop runs. `formatted` tells whether it was
// formatted now.
Status OpenVolumeLog(const std::string& path, uint64_t create_size, const Uuid& volume_uuid,
                     LogMode mode, std::shared_ptr<LogDevice>* device, ReplayedLog* log,
                     bool* formatted);

// The UUID a raw volume's log is formatted with (raw volumes have none): derived from the name.
Uuid RawVolumeLogUuid(const std::string& name);

class StagedDevice final : public volume::BlockDevice {
 public:
  // Opens the writer on `log` (ReplayLog of `device`: a durable session increment, blocking) and
  // indexes its records. The destager waits for Start().
  static Status Open(asio::io_context& io, std::unique_ptr<volume::BlockDevice> inner,
                     std::shared_ptr<LogDevice> device, const ReplayedLog& log,
                     StagedOptions options, std::unique_ptr<StagedDevice>* out);
  ~StagedDevice() override;
  StagedDevice(const StagedDevice&) = delete;
  StagedDevice& operator=(const StagedDevice&) = delete;

  // The inner device may be written: the destager begins with the records after D.
  void Start();
  // Completes once every committed record is destaged (D at the head) and nothing is in flight;
  // then the destager stops. EIO at once when the log has failed.
  void Close(Done done);
  // The destager takes no further step (what is in flight completes); for a stop whose Close did
  // not finish in time: the rest stays in the log for the next start.
  void Stop();

  const std::string& name() const override { return inner_->name(); }
  const std::string& description() const override { return inner_->description(); }
  uint64_t size() const override { return inner_->size(); }
  const volume::VolumeCapabilities& capabilities() const override { return caps_; }
  volume::DeviceState State() const override;

  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override;
  // Split into records of at most max_write_length() bytes each; acknowledged once all are
  // committed.
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override;
  // Every acknowledged write is in the synced log already.
  void Flush(Done done) override;
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override;
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override;
  void Cache(uint64_t offset, uint64_t length, Done done) override;
  // The whole range as data: the volume's own answer would miss what only the log holds.
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override;

  // Snapshots (docs/staging-log.md, "Snapshots"): the volume as of an acknowledged sequence S in
  // [D, head] is the members plus the records up to S (write-through: S in [O - 1, head], the
  // members overlaid by the before-images of the records after S). An open snapshot pins S: the
  // destager applies no record after it until the snapshot is closed, unless writes wait for log
  // space; then the snapshot's reads fail with EIO from there on (never mixed data).
  SnapshotRange Snapshots() const;
  // The sequence `point` names: EINVAL with the reason when it is outside the range.
  Status ResolvePoint(const SnapshotPoint& point, uint64_t* sequence) const;
  Status OpenSnapshot(std::string_view point, std::shared_ptr<volume::BlockDevice>* out) override;
  // The volume as of `sequence`, for a snapshot that pins it.
  void ReadAsOf(uint64_t sequence, uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done);
  void Pin(uint64_t sequence) { pins_.insert(sequence); }
  void Unpin(uint64_t sequence);

  LogMode mode() const { return mode_; }
  volume::BlockDevice& inner() { return *inner_; }
  const LogIndex& index() const { return index_; }
  uint64_t head_sequence() const { return snap_.durable_sequence; }
  // Write-through: the head (the members have every record's write).
  uint64_t destaged_sequence() const {
    return write_through() ? snap_.durable_sequence : destaged_;
  }
  bool log_full() const { return log_full_; }
  uint64_t max_write_length() const { return snap_.max_write_length; }

 private:
  // The writer's numbers, as the log thread last saw them.
  struct Snapshot {
    uint64_t used = 0;
    uint64_t ring_size = 0;
    uint64_t durable_sequence = 0;
    uint64_t max_write_length = 0;
    uint64_t head = 0;  // ring offset of the next record
  };
  struct Request {
    Done done;
    size_t chunks_left = 0;
    int err = 0;
    std::vector<uint8_t> data;        // a write's bytes, copied: the log thread reads them
    std::vector<uint64_t> sequences;  // of its records, as they are committed
  };
  // A write, trim or zero of a write-through volume, from its range lock to its acknowledgement.
  struct ThroughOp {
    RecordKind kind;  // what goes to the volume: kWrite, kTrim or kZero
    uint64_t offset = 0;
    uint64_t length = 0;
    std::vector<uint8_t> data;  // a write's bytes, copied
    bool fua = false;
    bool may_trim = false;
    bool fast_only = false;
    Done done;
    std::vector<uint64_t> sequences;  // of its before-image records, once committed
    volume::RangeLock::Id lock = 0;   // on [offset, offset + length), once granted
  };
  struct Chunk {
    RecordKind kind;
    uint64_t offset;
    uint64_t length;
    const uint8_t* data;  // inside request->data; null for trim and zero
    std::shared_ptr<Request> request;
  };
  struct Undestaged {
    uint64_t sequence;
    uint64_t size;      // in the log
    uint64_t time;      // ns
    uint64_t position;  // ring offset of its header page
  };

  StagedDevice(asio::io_context& io, std::unique_ptr<volume::BlockDevice> inner,
               std::shared_ptr<LogDevice> device, StagedOptions options);
  Snapshot TakeSnapshot() const;  // log thread
  template <typename Job>
  void OnLogThread(Job job);

  void Enqueue(RecordKind kind, uint64_t offset, uint64_t length, const uint8_t* data,
               std::shared_ptr<Request> request);
  // Appends every waiting request in one batch on the log thread; while the log is full, only
  // once space was released.
  void CommitWaiting(bool after_release = false);
  void Committed(std::vector<ReplayedRecord> appended, Status status, bool full, Snapshot snap);
  void Finish(Request& request, int err);
  void SetLogFull(bool full);
  void Recorded(const ReplayedRecord& record);

  // Reads `pieces` of [offset, offset + length) into buf.
  void ReadPieces(const std::vector<ReadPiece>& pieces, uint64_t offset, uint8_t* buf,
                  ReadDone done);
  // The time of record `sequence` (D or after), when known.
  std::optional<uint64_t> TimeOf(uint64_t sequence) const;
  // The oldest point still whole: D, or the record the destager is applying after it.
  // Write-through: O - 1, or the sequence a reclaim in progress frees up to.
  uint64_t OldestPoint() const { return std::max(destaged_, applying_through_); }
  // True, with a log line saying `why`, once `sequence` is older than the oldest point offered.
  bool PointGone(uint64_t sequence, const char* why) const;
  // The newest acknowledged point: the head, or in write-through mode the record before the
  // oldest whose write has not reached the volume yet.
  uint64_t NewestPoint() const;
  bool write_through() const { return mode_ == LogMode::kWriteThrough; }

  // ---- Write-through ----
  void SubmitThrough(RecordKind kind, uint64_t offset, uint64_t length, const uint8_t* data,
                     bool fua, bool may_trim, bool fast_only, Done done);
  // The range is locked: read the before-image and log it.
  void StartThrough(const std::shared_ptr<ThroughOp>& op);
  // The before-image is durable and indexed: apply the op to the volume.
  void ApplyThrough(const std::shared_ptr<ThroughOp>& op);
  void FinishThrough(const std::shared_ptr<ThroughOp>& op, int err);
  // Frees the oldest records (an append did not fit), then appends what waits.
  void Reclaim();
  void ReadBeforeImages(uint64_t sequence, uint64_t offset, uint64_t length, uint8_t* buf,
                        ReadDone done, int attempt);
  // Fails the waiting requests after the log failed.
  void FailLog(const Status& status, const char* what);

  void Destage();
  // Whether the destager keeps `record` back for the retention window or a snapshot's pin; `wait`
  // is how long until the window lets it go (0: only an unpin does).
  bool Held(const ReplayedRecord& record, std::chrono::nanoseconds* wait);
  void ApplyNext();
  void Applied(uint64_t sequence, int err);
  void FlushAndRecord();
  // D = target durably, and with `release` the space up to it freed.
  void RecordDestaged(uint64_t target, bool release);
  void Retry(const std::string& what, int err);
  void CheckClosed();

  asio::io_context& io_;
  LogMode mode_ = LogMode::kWriteBack;
  std::unique_ptr<volume::BlockDevice> inner_;
  StagedOptions options_;
  volume::VolumeCapabilities caps_;
  LogIndex index_;
  Snapshot snap_;
  std::deque<Chunk> waiting_;  // not yet appended, in arrival order
  bool committing_ = false;    // a batch is on the log thread
  bool log_full_ = false;
  Status failed_;  // the log failed: writes are refused
  // Destager.
  std::deque<ReplayedRecord> to_apply_;    // committed, not yet applied, in sequence order
  std::deque<Undestaged> undestaged_;      // committed, after D
  uint64_t destaged_ = 0;                  // D
  std::optional<uint64_t> destaged_time_;  // of record D, when known
  uint64_t applying_through_ = 0;          // the newest record the destager began to apply
  std::multiset<uint64_t> pins_;           // the sequences of open snapshots
  bool window_shrink_logged_ = false;      // since the log was last full
  asio::steady_timer hold_timer_;          // the retention window's next release
  uint64_t last_applied_ = 0;
  uint64_t released_ = 0;  // O - 1
  size_t applied_since_flush_ = 0;
  bool started_ = false;
  bool destage_busy_ = false;
  std::chrono::milliseconds backoff_{0};
  bool retrying_logged_ = false;
  asio::steady_timer retry_timer_;
  Done close_done_;
  bool stopped_ = false;
  // Write-through.
  // Bytes, exclusive: overlapping ops run one after the other, in arrival order, so that each
  // before-image is the range as the op before left it.
  volume::RangeLock through_lock_;
  size_t through_ops_ = 0;         // submitted, not yet acknowledged
  std::set<uint64_t> unfinished_;  // records whose op has not reached the volume yet
  bool reclaiming_ = false;        // a Release is on the log thread

  // ---- log thread ----
  std::shared_ptr<LogDevice> device_;
  std::unique_ptr<LogWriter> writer_;
  asio::thread_pool log_thread_{1};
};

}  // namespace dst::stagelog
