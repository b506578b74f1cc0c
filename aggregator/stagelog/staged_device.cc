#include "aggregator/stagelog/staged_device.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <span>

#include "common/log.h"

namespace dst::stagelog {

namespace {

std::string Str(uint64_t v) {
  return std::to_string(v);
}

Uuid RandomUuid() {
  std::random_device rd;
  Uuid u;
  for (uint8_t& b : u)
    b = static_cast<uint8_t>(rd());
  return u;
}

// A client read in parts (volume pieces and one log job): `done` once every part has arrived.
struct ReadJoin {
  volume::BlockDevice::ReadDone done;
  size_t parts = 0;
  int err = 0;

  void Arrive(int part_err) {
    if (part_err != 0 && err == 0) err = part_err;
    if (--parts == 0) done(err, {});
  }
};

Status FormatVolumeLog(LogDevice& device, const Uuid& volume_uuid, LogMode mode,
                       const std::string& path) {
  FormatOptions options;
  options.volume_uuid = volume_uuid;
  options.log_uuid = RandomUuid();
  options.now = SystemClockNanos();
  options.mode = mode;
  return FormatLog(device, options).Wrap("staging log " + path);
}

// A log written in the other mode: formatted anew for `mode` when nothing in it is pending.
Status ChangeMode(LogDevice& device, const Uuid& volume_uuid, LogMode mode,
                  const std::string& path) {
  ReplayedLog old;
  DST_RETURN_IF_ERROR(ReplayLog(device, volume_uuid, &old).Wrap(path));
  const LogMode was = old.superblock.mode;
  const uint64_t head = old.next_sequence - 1;
  if (was == LogMode::kWriteBack && head > old.destaged_sequence()) {
    return Status::Invalid(
        "staging log " + path + " is a write-back log with records " +
        std::to_string(old.destaged_sequence() + 1) + " to " + std::to_string(head) +
        " not yet on the members: serve it with --log-mode write-back until they are destaged, "
        "then change the mode");
  }
  LOG_INFO(
      "staging log %s: %s log with nothing pending formatted anew for %s: its snapshot "
      "points up to sequence %llu are gone",
      path.c_str(), std::string(LogModeName(was)).c_str(), std::string(LogModeName(mode)).c_str(),
      static_cast<unsigned long long>(head));
  return FormatVolumeLog(device, volume_uuid, mode, path);
}

}  // namespace

Status OpenVolumeLog(const std::string& path, uint64_t create_size, const Uuid& volume_uuid,
                     LogMode mode, std::shared_ptr<LogDevice>* device, ReplayedLog* log,
                     bool* formatted) {
  std::unique_ptr<FileLogDevice> file;
  Status s = FileLogDevice::Open(path, create_size, &file);
  if (!s.ok() && s.err() == ENOENT && create_size == 0)
    return Status::Error(ENOENT, s.message() + " (--log-size creates it)");
  DST_RETURN_IF_ERROR(s);
  *formatted = false;
  LogSuperblock sb;
  s = ReadLogSuperblock(*file, &sb);
  if (s.err() == ENOENT) {
    DST_RETURN_IF_ERROR(FormatVolumeLog(*file, volume_uuid, mode, path));
    *formatted = true;
  } else if (!s.ok()) {
    return s.Wrap("staging log " + path);
  } else if (sb.mode != mode) {
    DST_RETURN_IF_ERROR(ChangeMode(*file, volume_uuid, mode, path));
    *formatted = true;
  }
  DST_RETURN_IF_ERROR(ReplayLog(*file, volume_uuid, log).Wrap(path));
  *device = std::move(file);
  return Status::Ok();
}

Uuid RawVolumeLogUuid(const std::string& name) {
  Uuid u;
  for (uint32_t part = 0; part < 4; ++part) {
    const std::string text = "dst raw volume " + std::to_string(part) + " " + name;
    const uint32_t crc =
        Crc32c(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    for (uint32_t i = 0; i < 4; ++i)
      u[part * 4 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  }
  return u;
}

StagedDevice::StagedDevice(asio::io_context& io, std::unique_ptr<volume::BlockDevice> inner,
                           std::shared_ptr<LogDevice> device, StagedOptions options)
    : io_(io),
      inner_(std::move(inner)),
      options_(std::move(options)),
      caps_(inner_->capabilities()),
      hold_timer_(io),
      retry_timer_(io),
      device_(std::move(device)) {
  // The volume's allocation map misses what only the log holds.
  caps_.can_block_status = false;
}

StagedDevice::~StagedDevice() {
  retry_timer_.cancel();
  hold_timer_.cancel();
  log_thread_.join();
}

Status StagedDevice::Open(asio::io_context& io, std::unique_ptr<volume::BlockDevice> inner,
                          std::shared_ptr<LogDevice> device, const ReplayedLog& log,
                          StagedOptions options, std::unique_ptr<StagedDevice>* out) {
  std::unique_ptr<StagedDevice> d(
      new StagedDevice(io, std::move(inner), std::move(device), std::move(options)));
  DST_RETURN_IF_ERROR(LogWriter::Open(d->device_.get(), log, d->options_.clock, &d->writer_)
                          .Wrap("staging log " + d->options_.path));
  d->mode_ = log.superblock.mode;
  if (d->write_through()) {
    // The volume is the members as they are: their allocation map is right.
    d->caps_.can_block_status = d->inner_->capabilities().can_block_status;
    // Nothing to destage: every record only serves the points before it. D is O - 1 there.
    const uint64_t oldest_point = log.superblock.oldest_sequence - 1;
    for (const ReplayedRecord& r : log.records) {
      d->index_.Add(r);
      d->undestaged_.push_back(
          {r.header.sequence, r.header.record_size(), r.header.time, r.position});
    }
    d->index_.SetDestaged(oldest_point);
    d->destaged_ = d->last_applied_ = d->applying_through_ = d->released_ = oldest_point;
    d->snap_ = d->TakeSnapshot();
    *out = std::move(d);
    return Status::Ok();
  }
  const uint64_t destaged = log.destaged_sequence();
  for (const ReplayedRecord& r : log.records) {
    d->index_.Add(r);
    if (r.header.sequence == destaged) d->destaged_time_ = r.header.time;
    if (r.header.sequence <= destaged) continue;
    d->to_apply_.push_back(r);
    d->undestaged_.push_back(
        {r.header.sequence, r.header.record_size(), r.header.time, r.position});
  }
  d->index_.SetDestaged(destaged);
  d->destaged_ = destaged;
  d->last_applied_ = destaged;
  d->applying_through_ = destaged;
  d->released_ = log.superblock.oldest_sequence - 1;
  d->snap_ = d->TakeSnapshot();
  *out = std::move(d);
  return Status::Ok();
}

StagedDevice::Snapshot StagedDevice::TakeSnapshot() const {
  return {writer_->used(), writer_->ring_size(), writer_->durable_sequence(),
          writer_->max_write_length(), writer_->head()};
}

template <typename Job>
void StagedDevice::OnLogThread(Job job) {
  asio::post(log_thread_, std::move(job));
}

volume::DeviceState StagedDevice::State() const {
  volume::DeviceState state = inner_->State();
  volume::StagingLogState log;
  log.path = options_.path;
  log.mode = std::string(LogModeName(mode_));
  // Write-through: writes never wait for the log (reclaiming frees space at once), and nothing is
  // pending: the members have every acknowledged write.
  log.state = !failed_.ok() ? "failed" : log_full_ && !write_through() ? "log_full" : "normal";
  log.used_bytes = snap_.used;
  log.ring_size = snap_.ring_size;
  log.head_sequence = snap_.durable_sequence;
  log.destaged_sequence = destaged_sequence();
  if (!write_through())
    for (const Undestaged& u : undestaged_)
      log.pending_bytes += u.size;
  if (!write_through() && !undestaged_.empty()) {
    const uint64_t now = options_.clock();
    const uint64_t since = undestaged_.front().time;
    log.pending_age_ms = now > since ? (now - since) / 1000000 : 0;
  }
  const SnapshotRange points = Snapshots();
  log.retain_ms = static_cast<uint64_t>(options_.retain.count());
  log.oldest_point = points.oldest_sequence;
  log.oldest_point_time = points.oldest_time;
  log.newest_point = points.newest_sequence;
  log.newest_point_time = points.newest_time;
  state.staging_log = std::move(log);
  return state;
}

// ---- Client requests ----

void StagedDevice::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  // Write-through: the members have every acknowledged write.
  if (write_through()) return inner_->Read(offset, length, buf, std::move(done));
  if (length == 0) {
    asio::post(io_, [done = std::move(done)] { done(0, {}); });
    return;
  }
  ReadPieces(index_.Lookup(offset, length), offset, buf, std::move(done));
}

void StagedDevice::ReadPieces(const std::vector<ReadPiece>& pieces, uint64_t offset, uint8_t* buf,
                              ReadDone done) {
  auto join = std::make_shared<ReadJoin>();
  join->done = std::move(done);
  join->parts = 1;  // held until every part is started
  std::vector<ReadPiece> from_log;
  for (const ReadPiece& p : pieces) {
    uint8_t* at = buf + (p.offset - offset);
    if (!p.from_log) {
      ++join->parts;
      inner_->Read(p.offset, p.length, at,
                   [join](int err, std::vector<volume::ByteRange>) { join->Arrive(err); });
    } else if (!HasPayload(p.kind)) {
      std::memset(at, 0, p.length);
    } else {
      from_log.push_back(p);
    }
  }
  if (!from_log.empty()) {
    ++join->parts;
    // Posted before any Release that could free these records' space (the index still had them).
    OnLogThread([this, join, from_log = std::move(from_log), buf, offset] {
      int err = 0;
      for (const ReadPiece& p : from_log) {
        const uint64_t at = kRingOffset + p.position + kHeaderPageSize + p.offset_in_record;
        const Status s = device_->Read(at, std::span(buf + (p.offset - offset), p.length));
        if (!s.ok()) {
          LOG_ERROR("volume %s: staging log %s: read: %s", name().c_str(), options_.path.c_str(),
                    s.message().c_str());
          err = EIO;
          break;
        }
      }
      asio::post(io_, [join, err] { join->Arrive(err); });
    });
  }
  join->Arrive(0);
}

void StagedDevice::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua,
                         Done done) {
  if (write_through())
    return SubmitThrough(RecordKind::kWrite, offset, length, buf, fua, false, false,
                         std::move(done));
  auto request = std::make_shared<Request>();
  request->done = std::move(done);
  request->data.assign(buf, buf + length);
  const uint8_t* data = request->data.data();
  Enqueue(RecordKind::kWrite, offset, length, data, std::move(request));
}

void StagedDevice::Trim(uint64_t offset, uint64_t length, bool fua, Done done) {
  if (write_through())
    return SubmitThrough(RecordKind::kTrim, offset, length, nullptr, fua, false, false,
                         std::move(done));
  auto request = std::make_shared<Request>();
  request->done = std::move(done);
  Enqueue(RecordKind::kTrim, offset, length, nullptr, std::move(request));
}

void StagedDevice::Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
                        Done done) {
  if (write_through())
    return SubmitThrough(RecordKind::kZero, offset, length, nullptr, fua, may_trim, fast_only,
                         std::move(done));
  auto request = std::make_shared<Request>();
  request->done = std::move(done);
  Enqueue(RecordKind::kZero, offset, length, nullptr, std::move(request));
}

void StagedDevice::Flush(Done done) {
  // Write-through: the volume has the writes, and its flush makes them durable, as without a log.
  if (write_through()) return inner_->Flush(std::move(done));
  // Every acknowledged write was acknowledged after the log's sync.
  asio::post(io_, [done = std::move(done)] { done(0); });
}

void StagedDevice::Cache(uint64_t offset, uint64_t length, Done done) {
  inner_->Cache(offset, length, std::move(done));
}

void StagedDevice::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  if (write_through()) return inner_->BlockStatus(offset, length, std::move(done));
  asio::post(io_, [done = std::move(done), length] { done(0, {{length, 0}}); });
}

void StagedDevice::Enqueue(RecordKind kind, uint64_t offset, uint64_t length, const uint8_t* data,
                           std::shared_ptr<Request> request) {
  if (!failed_.ok() || length == 0 || stopped_) {
    const int err = length == 0 ? 0 : EIO;
    asio::post(io_, [request, err] { request->done(err); });
    return;
  }
  // A write longer than one record holds becomes several records, acknowledged together.
  const uint64_t most = HasPayload(kind) ? snap_.max_write_length : length;
  for (uint64_t at = 0; at < length; at += std::min(most, length - at)) {
    const uint64_t n = std::min(most, length - at);
    ++request->chunks_left;
    waiting_.push_back({kind, offset + at, n, data ? data + at : nullptr, request});
  }
  CommitWaiting();
}

void StagedDevice::CommitWaiting(bool after_release) {
  if (committing_ || waiting_.empty() || !failed_.ok() || (log_full_ && !after_release)) return;
  committing_ = true;
  std::vector<Chunk> batch(waiting_.begin(), waiting_.end());
  OnLogThread([this, batch = std::move(batch)] {
    std::vector<ReplayedRecord> appended;
    Status status;
    bool full = false;
    for (const Chunk& c : batch) {
      ReplayedRecord r;
      const std::span<const uint8_t> data =
          c.data ? std::span(c.data, c.length) : std::span<const uint8_t>();
      const Status s = writer_->Append(c.kind, c.offset, c.length, data, &r);
      if (s.err() == ENOSPC) {
        full = true;
        break;
      }
      if (!s.ok()) {
        status = s;
        break;
      }
      appended.push_back(r);
    }
    // One sync for the whole batch: the group commit.
    if (status.ok() && !appended.empty()) status = writer_->Commit();
    const Snapshot snap = TakeSnapshot();
    asio::post(io_, [this, appended = std::move(appended), status, full, snap]() mutable {
      Committed(std::move(appended), status, full, snap);
    });
  });
}

void StagedDevice::Committed(std::vector<ReplayedRecord> appended, Status status, bool full,
                             Snapshot snap) {
  committing_ = false;
  snap_ = snap;
  if (!status.ok()) return FailLog(status, "failed, writes are refused");
  for (const ReplayedRecord& r : appended) {
    Recorded(r);
    Chunk c = std::move(waiting_.front());
    waiting_.pop_front();
    c.request->sequences.push_back(r.header.sequence);
    Finish(*c.request, 0);
  }
  if (write_through()) {
    // The log drops its oldest records rather than keep a write waiting.
    if (full) {
      log_full_ = true;
      return Reclaim();
    }
    return CommitWaiting();
  }
  if (full) {
    SetLogFull(true);
  } else {
    SetLogFull(false);
    CommitWaiting();
  }
  Destage();
}

void StagedDevice::Finish(Request& request, int err) {
  if (err != 0 && request.err == 0) request.err = err;
  if (--request.chunks_left == 0) request.done(request.err);
}

void StagedDevice::SetLogFull(bool full) {
  if (full == log_full_) return;
  log_full_ = full;
  if (!full) window_shrink_logged_ = false;
  if (full)
    LOG_WARNING(
        "volume %s: staging log %s full (%s of %s bytes used): writes wait for the destager",
        name().c_str(), options_.path.c_str(), Str(snap_.used).c_str(),
        Str(snap_.ring_size).c_str());
  else
    LOG_INFO("volume %s: staging log %s has room again: writes resume", name().c_str(),
             options_.path.c_str());
}

void StagedDevice::FailLog(const Status& status, const char* what) {
  failed_ = status;
  LOG_ERROR("volume %s: staging log %s %s: %s", name().c_str(), options_.path.c_str(), what,
            status.message().c_str());
  while (!waiting_.empty()) {
    Chunk c = std::move(waiting_.front());
    waiting_.pop_front();
    Finish(*c.request, EIO);
  }
  CheckClosed();
}

void StagedDevice::Recorded(const ReplayedRecord& record) {
  index_.Add(record);
  if (write_through()) {
    unfinished_.insert(record.header.sequence);
    undestaged_.push_back(
        {record.header.sequence, record.header.record_size(), record.header.time, record.position});
    return;
  }
  to_apply_.push_back(record);
  undestaged_.push_back(
      {record.header.sequence, record.header.record_size(), record.header.time, record.position});
}

// ---- Destager ----

void StagedDevice::Start() {
  started_ = true;
  if (!to_apply_.empty())
    LOG_INFO("volume %s: staging log %s: destaging %zu records after sequence %s", name().c_str(),
             options_.path.c_str(), to_apply_.size(), Str(destaged_).c_str());
  Destage();
}

void StagedDevice::Destage() {
  if (!started_ || destage_busy_ || stopped_ || !failed_.ok() || write_through())
    return CheckClosed();
  while (!to_apply_.empty() && to_apply_.front().header.kind == RecordKind::kPadding)
    to_apply_.pop_front();
  // While writes wait for space, each applied record is recorded (and its space released) at
  // once; otherwise up to destage_batch records share one flush.
  const bool batch_done =
      applied_since_flush_ >= options_.destage_batch || (log_full_ && applied_since_flush_ > 0);
  std::chrono::nanoseconds wait{0};
  const bool held = !to_apply_.empty() && Held(to_apply_.front(), &wait);
  if (!to_apply_.empty() && !held && !batch_done) return ApplyNext();
  if (applied_since_flush_ > 0 || (to_apply_.empty() && snap_.durable_sequence > destaged_))
    return FlushAndRecord();
  // Writes wait for space that records already destaged hold.
  if (log_full_ && destaged_ > released_) return RecordDestaged(destaged_, true);
  if (held && wait.count() > 0) {
    hold_timer_.expires_after(wait);
    hold_timer_.async_wait([this](const asio::error_code& ec) {
      if (!ec) Destage();
    });
  }
  CheckClosed();
}

bool StagedDevice::Held(const ReplayedRecord& record, std::chrono::nanoseconds* wait) {
  if (close_done_) return false;  // a stop destages everything (the window starts anew)
  const uint64_t sequence = record.header.sequence;
  const bool pinned = !pins_.empty() && sequence > *pins_.begin();
  const uint64_t retain = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.retain).count());
  const uint64_t now = options_.clock();
  const bool young = retain > 0 && record.header.time + retain > now;
  if (!pinned && !young) return false;
  if (log_full_) {
    const char* why = !young   ? "past an open snapshot's point"
                      : pinned ? "inside the retention window and past an open snapshot's point"
                               : "inside the retention window";
    if (!window_shrink_logged_)
      LOG_WARNING(
          "volume %s: staging log %s full: destaging record %s %s; points before it are no "
          "longer snapshots",
          name().c_str(), options_.path.c_str(), Str(sequence).c_str(), why);
    window_shrink_logged_ = true;
    return false;
  }
  *wait = young ? std::chrono::nanoseconds(record.header.time + retain - now)
                : std::chrono::nanoseconds(0);
  return true;
}

void StagedDevice::ApplyNext() {
  destage_busy_ = true;
  const ReplayedRecord record = to_apply_.front();
  const RecordHeader& h = record.header;
  const uint64_t sequence = h.sequence;
  // From here on the members may hold this record: snapshots before it read EIO.
  applying_through_ = std::max(applying_through_, sequence);
  auto applied = [this, sequence](int err) { Applied(sequence, err); };
  switch (h.kind) {
    case RecordKind::kWrite: {
      auto data = std::make_shared<std::vector<uint8_t>>();
      OnLogThread([this, record, data, applied] {
        const Status s = ReadPayload(*device_, record, data.get());
        asio::post(io_, [this, record, data, applied, s] {
          if (!s.ok()) return Retry("reading record " + Str(record.header.sequence), s.err());
          inner_->Write(record.header.volume_offset, record.header.length, data->data(), false,
                        [data, applied](int err) { applied(err); });
        });
      });
      return;
    }
    case RecordKind::kTrim:
      // A trim is advice: a volume that cannot take it keeps the data.
      if (!inner_->capabilities().can_trim) {
        asio::post(io_, [applied] { applied(0); });
        return;
      }
      inner_->Trim(h.volume_offset, h.length, false, applied);
      return;
    case RecordKind::kZero:
      inner_->Zero(h.volume_offset, h.length, false, false, false, applied);
      return;
    case RecordKind::kPadding:
    case RecordKind::kBeforeImage:  // never in a write-back log
      break;
  }
  asio::post(io_, [applied] { applied(0); });
}

void StagedDevice::Applied(uint64_t sequence, int err) {
  if (err != 0) return Retry("applying record " + Str(sequence), err);
  if (retrying_logged_)
    LOG_INFO("volume %s: staging log %s: destaging again from record %s", name().c_str(),
             options_.path.c_str(), Str(sequence).c_str());
  retrying_logged_ = false;
  backoff_ = std::chrono::milliseconds(0);
  to_apply_.pop_front();
  last_applied_ = sequence;
  ++applied_since_flush_;
  destage_busy_ = false;
  Destage();
}

void StagedDevice::FlushAndRecord() {
  destage_busy_ = true;
  // Nothing left to apply: every committed record up to the head is applied or padding.
  const uint64_t target = to_apply_.empty() ? snap_.durable_sequence : last_applied_;
  inner_->Flush([this, target](int err) {
    if (err != 0) return Retry("flushing the volume", err);
    const bool release =
        log_full_ || static_cast<double>(snap_.used) >
                         options_.release_fill * static_cast<double>(snap_.ring_size);
    RecordDestaged(target, release);
  });
}

void StagedDevice::RecordDestaged(uint64_t target, bool release) {
  destage_busy_ = true;
  index_.SetDestaged(target);
  // Reads looked up from here on go to the volume, which holds these records (flushed); reads
  // looked up before are on the log thread ahead of the Release.
  if (release) index_.DropThrough(target);
  OnLogThread([this, target, release] {
    Status s = writer_->SetDestaged(target);
    if (s.ok() && release) s = writer_->Release(target);
    const Snapshot snap = TakeSnapshot();
    asio::post(io_, [this, target, release, s, snap] {
      snap_ = snap;
      destage_busy_ = false;
      if (!s.ok()) return FailLog(s, "failed");
      destaged_ = target;
      if (release) released_ = target;
      applied_since_flush_ = 0;
      while (!undestaged_.empty() && undestaged_.front().sequence <= target) {
        destaged_time_ = undestaged_.front().time;
        undestaged_.pop_front();
      }
      applying_through_ = std::max(applying_through_, target);
      if (release) CommitWaiting(true);
      Destage();
    });
  });
}

void StagedDevice::Retry(const std::string& what, int err) {
  backoff_ =
      backoff_.count() == 0 ? options_.retry_min : std::min(2 * backoff_, options_.retry_max);
  if (!retrying_logged_)
    LOG_WARNING("volume %s: staging log %s: %s failed: %s; retrying (writes still go to the log)",
                name().c_str(), options_.path.c_str(), what.c_str(), std::strerror(err));
  retrying_logged_ = true;
  retry_timer_.expires_after(backoff_);
  retry_timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    destage_busy_ = false;
    Destage();
  });
}

void StagedDevice::Close(Done done) {
  close_done_ = std::move(done);
  if (!started_) stopped_ = true;
  hold_timer_.cancel();
  Destage();  // what the retention window or a snapshot held goes now
}

void StagedDevice::Stop() {
  stopped_ = true;
  retry_timer_.cancel();
  hold_timer_.cancel();
}

void StagedDevice::CheckClosed() {
  if (!close_done_ || committing_ || !waiting_.empty() || destage_busy_ || reclaiming_ ||
      through_ops_ > 0)
    return;
  const bool destaged =
      write_through() || (to_apply_.empty() && destaged_ >= snap_.durable_sequence);
  if (failed_.ok() && started_ && !destaged) return;
  stopped_ = true;
  Done done = std::move(close_done_);
  close_done_ = nullptr;
  done(failed_.ok() ? 0 : EIO);
}

// ---- Snapshots ----

namespace {

// A read-only export of a staged volume as of one sequence, which it pins while open. Lives no
// longer than the StagedDevice (a client connection, which ends before its volume goes).
class SnapshotDevice final : public volume::BlockDevice {
 public:
  SnapshotDevice(StagedDevice& staged, uint64_t sequence)
      : staged_(staged),
        sequence_(sequence),
        name_(staged.name() + "@" + std::to_string(sequence)),
        caps_(staged.capabilities()) {
    caps_.read_only = true;
    caps_.can_trim = false;
    caps_.can_fast_zero = false;
    caps_.can_cache = false;
    caps_.can_block_status = false;
    staged_.Pin(sequence_);
  }
  ~SnapshotDevice() override { staged_.Unpin(sequence_); }

  const std::string& name() const override { return name_; }
  const std::string& description() const override { return staged_.description(); }
  uint64_t size() const override { return staged_.size(); }
  const volume::VolumeCapabilities& capabilities() const override { return caps_; }

  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override {
    staged_.ReadAsOf(sequence_, offset, length, buf, std::move(done));
  }
  void Write(uint64_t, uint64_t, const uint8_t*, bool, Done done) override { Refuse(done); }
  void Flush(Done done) override { Answer(done, 0); }
  void Trim(uint64_t, uint64_t, bool, Done done) override { Refuse(done); }
  void Zero(uint64_t, uint64_t, bool, bool, bool, Done done) override { Refuse(done); }
  void Cache(uint64_t, uint64_t, Done done) override { Answer(done, 0); }
  void BlockStatus(uint64_t /*offset*/, uint64_t length, ExtentsDone done) override {
    done(0, {{length, 0}});
  }

 private:
  static void Answer(Done& done, int err) { done(err); }
  static void Refuse(Done& done) { done(EPERM); }  // the export is read-only

  StagedDevice& staged_;
  const uint64_t sequence_;
  const std::string name_;
  volume::VolumeCapabilities caps_;
};

}  // namespace

std::optional<uint64_t> StagedDevice::TimeOf(uint64_t sequence) const {
  if (sequence == destaged_) return destaged_time_;
  const auto it = std::lower_bound(undestaged_.begin(), undestaged_.end(), sequence,
                                   [](const Undestaged& u, uint64_t s) { return u.sequence < s; });
  if (it == undestaged_.end() || it->sequence != sequence) return std::nullopt;
  return it->time;
}

SnapshotRange StagedDevice::Snapshots() const {
  SnapshotRange range;
  range.oldest_sequence = OldestPoint();
  range.oldest_time = TimeOf(range.oldest_sequence);
  range.newest_sequence = std::max(NewestPoint(), range.oldest_sequence);
  range.newest_time = TimeOf(range.newest_sequence);
  return range;
}

Status StagedDevice::ResolvePoint(const SnapshotPoint& point, uint64_t* sequence) const {
  const SnapshotRange range = Snapshots();
  // Write-through: a reclaim freed the records of writes still on their way to the volume.
  if (NewestPoint() < range.oldest_sequence)
    return Status::Invalid("volume " + name() +
                           " has no snapshot now: its log reclaimed the records of writes that "
                           "have not reached the volume yet");
  const std::string available = "volume " + name() + " has snapshots of sequences " +
                                Str(range.oldest_sequence) + " to " + Str(range.newest_sequence);
  if (!point.is_time) {
    if (point.sequence < range.oldest_sequence || point.sequence > range.newest_sequence)
      return Status::Invalid("sequence " + Str(point.sequence) + " is not available: " + available);
    *sequence = point.sequence;
    return Status::Ok();
  }
  // The last record at or before the time: times grow with sequences.
  std::optional<uint64_t> found;
  if (range.oldest_time && *range.oldest_time <= point.time) found = range.oldest_sequence;
  for (const Undestaged& u : undestaged_) {
    if (u.sequence <= range.oldest_sequence) continue;
    if (u.time > point.time || u.sequence > range.newest_sequence) break;
    found = u.sequence;
  }
  if (!found)
    return Status::Invalid(
        "no snapshot at or before " + FormatRecordTime(point.time) + ": " + available +
        (range.oldest_time ? " (from " + FormatRecordTime(*range.oldest_time) + ")" : ""));
  *sequence = *found;
  return Status::Ok();
}

Status StagedDevice::OpenSnapshot(std::string_view text,
                                  std::shared_ptr<volume::BlockDevice>* out) {
  SnapshotPoint point;
  DST_RETURN_IF_ERROR(ParseSnapshotPoint(text, &point));
  uint64_t sequence = 0;
  DST_RETURN_IF_ERROR(ResolvePoint(point, &sequence));
  *out = std::make_shared<SnapshotDevice>(*this, sequence);
  return Status::Ok();
}

void StagedDevice::Unpin(uint64_t sequence) {
  const auto it = pins_.find(sequence);
  if (it != pins_.end()) pins_.erase(it);
  Destage();
}

uint64_t StagedDevice::NewestPoint() const {
  if (unfinished_.empty()) return snap_.durable_sequence;
  return *unfinished_.begin() - 1;
}

bool StagedDevice::PointGone(uint64_t sequence, const char* why) const {
  if (sequence >= OldestPoint()) return false;
  LOG_WARNING(
      "volume %s: staging log %s: snapshot %s read refused: %s (log full); its oldest point is "
      "now %s",
      name().c_str(), options_.path.c_str(), Str(sequence).c_str(), why,
      Str(OldestPoint()).c_str());
  return true;
}

void StagedDevice::ReadAsOf(uint64_t sequence, uint64_t offset, uint64_t length, uint8_t* buf,
                            ReadDone done) {
  if (write_through()) return ReadBeforeImages(sequence, offset, length, buf, std::move(done), 0);
  // The members may hold records after `sequence` once the destager began to apply one.
  std::vector<ReadPiece> pieces;
  if (PointGone(sequence, "the destager passed it") ||
      !index_.LookupAsOf(offset, length, sequence, &pieces).ok()) {
    asio::post(io_, [done = std::move(done)] { done(EIO, {}); });
    return;
  }
  if (length == 0) {
    asio::post(io_, [done = std::move(done)] { done(0, {}); });
    return;
  }
  // Checked again once the data is in: a record applied meanwhile may have changed the members.
  ReadPieces(pieces, offset, buf,
             [this, sequence, done = std::move(done)](int err, std::vector<volume::ByteRange>) {
               done(err == 0 && PointGone(sequence, "the destager passed it") ? EIO : err, {});
             });
}

// ---- Write-through ----

namespace {

// Snapshot reads that raced a write of the same bytes are read again; a read that keeps losing
// that race fails rather than loop.
constexpr int kMaxSnapshotReadAttempts = 16;

}  // namespace

void StagedDevice::SubmitThrough(RecordKind kind, uint64_t offset, uint64_t length,
                                 const uint8_t* data, bool fua, bool may_trim, bool fast_only,
                                 Done done) {
  if (length == 0 || !failed_.ok() || stopped_) {
    const int err = length == 0 ? 0 : EIO;
    asio::post(io_, [done = std::move(done), err] { done(err); });
    return;
  }
  auto op = std::make_shared<ThroughOp>();
  op->kind = kind;
  op->offset = offset;
  op->length = length;
  if (data != nullptr) op->data.assign(data, data + length);
  op->fua = fua;
  op->may_trim = may_trim;
  op->fast_only = fast_only;
  op->done = std::move(done);
  ++through_ops_;
  through_lock_.Acquire(offset, length, true, [this, op](volume::RangeLock::Id id) {
    op->lock = id;
    StartThrough(op);
  });
}

void StagedDevice::StartThrough(const std::shared_ptr<ThroughOp>& op) {
  // The request (the before-image and its records) lives as long as its chunks wait for the
  // log; its `done` runs from one of them.
  auto request = std::make_shared<Request>();
  request->data.resize(op->length);
  request->done = [this, op, r = request.get()](int err) {
    op->sequences = r->sequences;
    if (err != 0) return FinishThrough(op, err);
    ApplyThrough(op);
  };
  inner_->Read(op->offset, op->length, request->data.data(),
               [this, op, request](int err, std::vector<volume::ByteRange>) {
                 if (err != 0) return FinishThrough(op, err);
                 Enqueue(RecordKind::kBeforeImage, op->offset, op->length, request->data.data(),
                         request);
               });
}

void StagedDevice::ApplyThrough(const std::shared_ptr<ThroughOp>& op) {
  // The before-image is durable and in the index: a snapshot read that looks the range up from
  // here on takes it from the log, and one that looked it up before and read the volume checks
  // for it once its data is in (ReadBeforeImages).
  auto finish = [this, op](int err) { FinishThrough(op, err); };
  switch (op->kind) {
    case RecordKind::kWrite:
      return inner_->Write(op->offset, op->length, op->data.data(), op->fua, finish);
    case RecordKind::kTrim:
      return inner_->Trim(op->offset, op->length, op->fua, finish);
    case RecordKind::kZero:
      return inner_->Zero(op->offset, op->length, op->may_trim, op->fast_only, op->fua, finish);
    default:
      break;
  }
  asio::post(io_, [finish] { finish(EINVAL); });
}

void StagedDevice::FinishThrough(const std::shared_ptr<ThroughOp>& op, int err) {
  // A failed op's before-image stays: it is the range as it was before the op, and the volume
  // holds what the op left there (all, part or none of it) for the points after it, as the
  // client's reads do.
  for (uint64_t sequence : op->sequences)
    unfinished_.erase(sequence);
  --through_ops_;
  Done done = std::move(op->done);
  through_lock_.Release(op->lock);
  done(err);
  CheckClosed();
}

void StagedDevice::Reclaim() {
  if (reclaiming_) return;
  reclaiming_ = true;
  // The oldest records go until at most release_fill of the ring is used; at least one. What is
  // left is the ring from the next record kept to the head (padding before it goes too).
  const double target = options_.release_fill * static_cast<double>(snap_.ring_size);
  uint64_t through = released_;
  for (size_t i = 0; i < undestaged_.size(); ++i) {
    through = undestaged_[i].sequence;
    if (i + 1 == undestaged_.size()) break;
    const uint64_t next = undestaged_[i + 1].position;
    const uint64_t left = (snap_.head + snap_.ring_size - next) % snap_.ring_size;
    if (static_cast<double>(left) <= target) break;
  }
  // Only padding is held: free everything committed.
  if (through == released_) through = snap_.durable_sequence;
  // Once per snapshot: the reclaim that first passes its point.
  if (!pins_.empty() && *pins_.begin() < through && *pins_.begin() >= OldestPoint())
    LOG_WARNING(
        "volume %s: staging log %s full: reclaiming records up to %s; an open snapshot of %s is "
        "no longer whole and its reads fail",
        name().c_str(), options_.path.c_str(), Str(through).c_str(), Str(*pins_.begin()).c_str());
  // From here on points before `through` are gone: reads looked up after this go nowhere near the
  // freed space, and those looked up before are on the log thread ahead of the Release.
  applying_through_ = std::max(applying_through_, through);
  index_.SetDestaged(through);
  index_.DropThrough(through);
  OnLogThread([this, through] {
    const Status s = writer_->Release(through);
    const Snapshot snap = TakeSnapshot();
    asio::post(io_, [this, through, s, snap] {
      snap_ = snap;
      reclaiming_ = false;
      if (!s.ok()) return FailLog(s, "failed");
      destaged_ = last_applied_ = released_ = through;
      while (!undestaged_.empty() && undestaged_.front().sequence <= through) {
        destaged_time_ = undestaged_.front().time;
        undestaged_.pop_front();
      }
      log_full_ = false;
      CommitWaiting(true);
      CheckClosed();
    });
  });
}

void StagedDevice::ReadBeforeImages(uint64_t sequence, uint64_t offset, uint64_t length,
                                    uint8_t* buf, ReadDone done, int attempt) {
  // Reclaimed records took the before-images this point needs.
  std::vector<ReadPiece> pieces;
  if (PointGone(sequence, "its records were reclaimed") ||
      !index_.LookupBeforeImages(offset, length, sequence, &pieces).ok()) {
    asio::post(io_, [done = std::move(done)] { done(EIO, {}); });
    return;
  }
  if (length == 0) {
    asio::post(io_, [done = std::move(done)] { done(0, {}); });
    return;
  }
  // Why the volume pieces are exact. Every record up to `sequence` has reached the volume
  // (sequence <= NewestPoint when the snapshot opened, which only grows), and no record after it
  // covers a volume piece at the lookup (the lookup would have taken the piece from that
  // record's before-image), so the volume holds those bytes as of `sequence` unless a write
  // records its before-image and reaches the volume while this read is in flight. Its
  // before-image is indexed before its volume write starts, and the two volume requests may pass
  // each other on the way, so after the data is in: a record newer than the lookup over this
  // range means the volume pieces may hold the new data, and the read is done again; this time
  // the lookup takes those bytes from that record's before-image in the log, which no write
  // changes. The log pieces are read on the log thread ahead of any Release of their space.
  const uint64_t looked_up_through = index_.last_sequence();
  auto reread = [this, sequence, offset, length, buf, attempt, looked_up_through,
                 done = std::move(done)](int err, std::vector<volume::ByteRange>) mutable {
    if (err != 0) return done(err, {});
    if (PointGone(sequence, "its records were reclaimed")) return done(EIO, {});
    if (!index_.CoveredAfter(offset, length, looked_up_through)) return done(0, {});
    if (attempt + 1 >= kMaxSnapshotReadAttempts) {
      LOG_WARNING(
          "volume %s: staging log %s: snapshot %s read of %s+%s refused: writes of the same "
          "bytes changed them during %d attempts",
          name().c_str(), options_.path.c_str(), Str(sequence).c_str(), Str(offset).c_str(),
          Str(length).c_str(), kMaxSnapshotReadAttempts);
      return done(EIO, {});
    }
    ReadBeforeImages(sequence, offset, length, buf, std::move(done), attempt + 1);
  };
  ReadPieces(pieces, offset, buf, std::move(reread));
}

}  // namespace dst::stagelog
