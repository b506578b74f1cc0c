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

}  // namespace

Status OpenVolumeLog(const std::string& path, uint64_t create_size, const Uuid& volume_uuid,
                     std::shared_ptr<LogDevice>* device, ReplayedLog* log, bool* formatted) {
  std::unique_ptr<FileLogDevice> file;
  Status s = FileLogDevice::Open(path, create_size, &file);
  if (!s.ok() && s.err() == ENOENT && create_size == 0)
    return Status::Error(ENOENT, s.message() + " (--log-size creates it)");
  DST_RETURN_IF_ERROR(s);
  *formatted = false;
  LogSuperblock sb;
  s = ReadLogSuperblock(*file, &sb);
  if (s.err() == ENOENT) {
    FormatOptions options;
    options.volume_uuid = volume_uuid;
    options.log_uuid = RandomUuid();
    options.now = SystemClockNanos();
    DST_RETURN_IF_ERROR(FormatLog(*file, options).Wrap("staging log " + path));
    *formatted = true;
  } else if (!s.ok()) {
    return s.Wrap("staging log " + path);
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
  const uint64_t destaged = log.destaged_sequence();
  for (const ReplayedRecord& r : log.records) {
    d->index_.Add(r);
    if (r.header.sequence == destaged) d->destaged_time_ = r.header.time;
    if (r.header.sequence <= destaged) continue;
    d->to_apply_.push_back(r);
    d->undestaged_.push_back({r.header.sequence, r.header.record_size(), r.header.time});
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
          writer_->max_write_length()};
}

template <typename Job>
void StagedDevice::OnLogThread(Job job) {
  asio::post(log_thread_, std::move(job));
}

volume::DeviceState StagedDevice::State() const {
  volume::DeviceState state = inner_->State();
  volume::StagingLogState log;
  log.path = options_.path;
  log.state = !failed_.ok() ? "failed" : log_full_ ? "log_full" : "normal";
  log.used_bytes = snap_.used;
  log.ring_size = snap_.ring_size;
  log.head_sequence = snap_.durable_sequence;
  log.destaged_sequence = destaged_;
  for (const Undestaged& u : undestaged_)
    log.pending_bytes += u.size;
  if (!undestaged_.empty()) {
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
    } else if (p.kind != RecordKind::kWrite) {
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

void StagedDevice::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool /*fua*/,
                         Done done) {
  auto request = std::make_shared<Request>();
  request->done = std::move(done);
  request->data.assign(buf, buf + length);
  const uint8_t* data = request->data.data();
  Enqueue(RecordKind::kWrite, offset, length, data, std::move(request));
}

void StagedDevice::Trim(uint64_t offset, uint64_t length, bool /*fua*/, Done done) {
  auto request = std::make_shared<Request>();
  request->done = std::move(done);
  Enqueue(RecordKind::kTrim, offset, length, nullptr, std::move(request));
}

void StagedDevice::Zero(uint64_t offset, uint64_t length, bool /*may_trim*/, bool /*fast_only*/,
                        bool /*fua*/, Done done) {
  auto request = std::make_shared<Request>();
  request->done = std::move(done);
  Enqueue(RecordKind::kZero, offset, length, nullptr, std::move(request));
}

void StagedDevice::Flush(Done done) {
  // Every acknowledged write was acknowledged after the log's sync.
  asio::post(io_, [done = std::move(done)] { done(0); });
}

void StagedDevice::Cache(uint64_t offset, uint64_t length, Done done) {
  inner_->Cache(offset, length, std::move(done));
}

void StagedDevice::BlockStatus(uint64_t /*offset*/, uint64_t length, ExtentsDone done) {
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
  const uint64_t most = kind == RecordKind::kWrite ? snap_.max_write_length : length;
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
  if (!status.ok()) {
    failed_ = status;
    LOG_ERROR("volume %s: staging log %s failed, writes are refused: %s", name().c_str(),
              options_.path.c_str(), status.message().c_str());
    while (!waiting_.empty()) {
      Chunk c = std::move(waiting_.front());
      waiting_.pop_front();
      Finish(*c.request, EIO);
    }
    CheckClosed();
    return;
  }
  for (const ReplayedRecord& r : appended) {
    Recorded(r);
    Chunk c = std::move(waiting_.front());
    waiting_.pop_front();
    Finish(*c.request, 0);
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

void StagedDevice::Recorded(const ReplayedRecord& record) {
  index_.Add(record);
  to_apply_.push_back(record);
  undestaged_.push_back({record.header.sequence, record.header.record_size(), record.header.time});
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
  if (!started_ || destage_busy_ || stopped_ || !failed_.ok()) return CheckClosed();
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
      if (!s.ok()) {
        failed_ = s;
        LOG_ERROR("volume %s: staging log %s failed: %s", name().c_str(), options_.path.c_str(),
                  s.message().c_str());
        while (!waiting_.empty()) {
          Chunk c = std::move(waiting_.front());
          waiting_.pop_front();
          Finish(*c.request, EIO);
        }
        return CheckClosed();
      }
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
  if (!close_done_ || committing_ || !waiting_.empty() || destage_busy_) return;
  const bool destaged = to_apply_.empty() && destaged_ >= snap_.durable_sequence;
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
  range.newest_sequence = std::max(snap_.durable_sequence, range.oldest_sequence);
  range.newest_time = TimeOf(range.newest_sequence);
  return range;
}

Status StagedDevice::ResolvePoint(const SnapshotPoint& point, uint64_t* sequence) const {
  const SnapshotRange range = Snapshots();
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
    if (u.time > point.time) break;
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

void StagedDevice::ReadAsOf(uint64_t sequence, uint64_t offset, uint64_t length, uint8_t* buf,
                            ReadDone done) {
  // The members may hold records after `sequence` once the destager began to apply one.
  auto gone = [this, sequence] {
    if (sequence >= OldestPoint()) return false;
    LOG_WARNING(
        "volume %s: staging log %s: snapshot %s read refused: the destager passed it (log full); "
        "its oldest point is now %s",
        name().c_str(), options_.path.c_str(), Str(sequence).c_str(), Str(OldestPoint()).c_str());
    return true;
  };
  std::vector<ReadPiece> pieces;
  if (gone() || !index_.LookupAsOf(offset, length, sequence, &pieces).ok()) {
    asio::post(io_, [done = std::move(done)] { done(EIO, {}); });
    return;
  }
  if (length == 0) {
    asio::post(io_, [done = std::move(done)] { done(0, {}); });
    return;
  }
  // Checked again once the data is in: a record applied meanwhile may have changed the members.
  ReadPieces(pieces, offset, buf,
             [gone, done = std::move(done)](int err, std::vector<volume::ByteRange>) {
               done(err == 0 && gone() ? EIO : err, {});
             });
}

}  // namespace dst::stagelog
