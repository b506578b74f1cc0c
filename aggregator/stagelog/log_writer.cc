#include "aggregator/stagelog/log_writer.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

namespace dst::stagelog {

uint64_t SystemClockNanos() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

Status FormatLog(LogDevice& device, const FormatOptions& options) {
  LogSuperblock sb;
  sb.volume_uuid = options.volume_uuid;
  sb.log_uuid = options.log_uuid;
  sb.log_size = device.size();
  sb.ring_size = RingSizeFor(device.size());
  sb.created = options.now;
  sb.updated = options.now;
  sb.mode = options.mode;
  if (sb.ring_size < kMinRingSize) {
    return Status::Invalid("staging log device of " + std::to_string(device.size()) +
                           " bytes is too small: it needs at least " +
                           std::to_string(kRingOffset + kMinRingSize));
  }
  std::array<uint8_t, kSlotSize> slot;
  for (uint64_t event : {0, 1}) {
    sb.event = event;
    DST_RETURN_IF_ERROR(EncodeSuperblock(sb, slot));
    DST_RETURN_IF_ERROR(device.Write(SlotOffset(NextSlot(event)), slot));
  }
  return device.Sync().Wrap("format staging log");
}

Status LogWriter::Open(LogDevice* device, const ReplayedLog& log, LogClock clock,
                       std::unique_ptr<LogWriter>* out) {
  std::unique_ptr<LogWriter> w(new LogWriter(device, std::move(clock)));
  w->sb_ = log.superblock;
  for (const ReplayedRecord& r : log.records) {
    w->records_.push_back({r.header.sequence, r.position, r.header.record_size(), r.header.time});
  }
  w->next_sequence_ = log.next_sequence;
  w->durable_sequence_ = log.next_sequence - 1;
  w->head_ = log.head;
  w->used_ = log.used;
  ++w->sb_.session;
  DST_RETURN_IF_ERROR(w->WriteSuperblock());
  *out = std::move(w);
  return Status::Ok();
}

Status LogWriter::CheckUsable() const {
  if (!failed_.ok()) return Status::Error(EIO, "staging log failed earlier: " + failed_.message());
  return Status::Ok();
}

Status LogWriter::Fail(Status status) {
  failed_ = status;
  return status;
}

uint64_t LogWriter::PositionOf(uint64_t sequence) const {
  if (sequence >= next_sequence_) return head_;
  return records_[sequence - records_.front().sequence].position;
}

Status LogWriter::WriteSuperblock() {
  LogSuperblock next = sb_;
  ++next.event;
  next.updated = clock_();
  next.oldest_time = records_.empty() ? 0 : records_.front().time;
  std::array<uint8_t, kSlotSize> slot;
  DST_RETURN_IF_ERROR(EncodeSuperblock(next, slot));
  if (Status st = device_->Write(SlotOffset(NextSlot(next.event)), slot); !st.ok()) {
    return Fail(st.Wrap("write the staging log superblock"));
  }
  if (Status st = device_->Sync(); !st.ok()) {
    return Fail(st.Wrap("sync the staging log superblock"));
  }
  sb_ = next;
  // The sync made every record appended before it durable too.
  durable_sequence_ = next_sequence_ - 1;
  return Status::Ok();
}

Status LogWriter::WriteRecord(RecordHeader h, std::span<const uint8_t> data, ReplayedRecord* out) {
  h.sequence = next_sequence_;
  h.session = sb_.session;
  h.log_uuid = sb_.log_uuid;
  h.time = clock_();
  const uint64_t written = h.kind == RecordKind::kPadding ? 0 : h.payload_size;
  std::vector<uint8_t> buffer(kHeaderPageSize + written, 0);
  DST_RETURN_IF_ERROR(
      EncodeRecordHeader(h, std::span<uint8_t, kHeaderSize>(buffer.data(), kHeaderSize)));
  std::copy(data.begin(), data.end(), buffer.begin() + kHeaderPageSize);
  if (Status st = device_->Write(kRingOffset + head_, buffer); !st.ok()) {
    return Fail(st.Wrap("append record " + std::to_string(h.sequence) + " to the staging log"));
  }
  if (out != nullptr) *out = {h, head_};
  records_.push_back({h.sequence, head_, h.record_size(), h.time});
  used_ += h.record_size();
  head_ = (head_ + h.record_size()) % sb_.ring_size;
  ++next_sequence_;
  return Status::Ok();
}

Status LogWriter::Append(RecordKind kind, uint64_t volume_offset, uint64_t length,
                         std::span<const uint8_t> data, ReplayedRecord* out) {
  DST_RETURN_IF_ERROR(CheckUsable());
  RecordHeader h;
  h.kind = kind;
  h.sequence = next_sequence_;
  h.volume_offset = volume_offset;
  h.length = length;
  if (kind == RecordKind::kPadding) return Status::Invalid("padding is not appended by callers");
  if (!KindBelongsTo(kind, sb_.mode)) {
    return Status::Invalid("a " + std::string(RecordKindName(kind)) + " record in a " +
                           std::string(LogModeName(sb_.mode)) + " log");
  }
  if (HasPayload(kind)) {
    if (data.size() != length) {
      return Status::Invalid("write of " + std::to_string(length) + " bytes with " +
                             std::to_string(data.size()) + " bytes of data");
    }
    if (length > max_write_length()) {
      return Status::Invalid("write of " + std::to_string(length) +
                             " bytes is longer than a staging log " + "record holds (" +
                             std::to_string(max_write_length()) + ")");
    }
    h.payload_size = RoundUpToPage(length);
    h.payload_checksum = Crc32c(data);
  } else if (!data.empty()) {
    return Status::Invalid(std::string("a ") + std::string(RecordKindName(kind)) +
                           " record carries no data");
  }
  DST_RETURN_IF_ERROR(ValidateRecordHeader(h));
  const uint64_t room_to_end = sb_.ring_size - head_;
  const uint64_t padding = h.record_size() > room_to_end ? room_to_end : 0;
  if (used_ + padding + h.record_size() > sb_.ring_size) {
    return Status::Error(ENOSPC, "staging log full: " + std::to_string(padding + h.record_size()) +
                                     " bytes needed, " + std::to_string(sb_.ring_size - used_) +
                                     " free");
  }
  if (padding > 0) {
    RecordHeader pad;
    pad.kind = RecordKind::kPadding;
    pad.payload_size = padding - kHeaderPageSize;
    DST_RETURN_IF_ERROR(WriteRecord(pad, {}, nullptr));
  }
  return WriteRecord(h, data, out);
}

Status LogWriter::Commit() {
  DST_RETURN_IF_ERROR(CheckUsable());
  if (durable_sequence_ + 1 == next_sequence_) return Status::Ok();
  if (Status st = device_->Sync(); !st.ok()) return Fail(st.Wrap("sync the staging log"));
  durable_sequence_ = next_sequence_ - 1;
  return Status::Ok();
}

Status LogWriter::SetDestaged(uint64_t sequence) {
  DST_RETURN_IF_ERROR(CheckUsable());
  if (sequence > durable_sequence_ || sequence < sb_.destaged_sequence) {
    return Status::Invalid("destaged sequence " + std::to_string(sequence) + " is not between " +
                           std::to_string(sb_.destaged_sequence) + " and the durable sequence " +
                           std::to_string(durable_sequence_));
  }
  if (sequence == sb_.destaged_sequence) return Status::Ok();
  const LogSuperblock before = sb_;
  sb_.destaged_sequence = sequence;
  sb_.destaged_position = PositionOf(sequence + 1);
  if (Status st = WriteSuperblock(); !st.ok()) {
    sb_ = before;
    return st;
  }
  return Status::Ok();
}

Status LogWriter::Release(uint64_t sequence) {
  DST_RETURN_IF_ERROR(CheckUsable());
  const bool write_through = sb_.mode == LogMode::kWriteThrough;
  if (write_through && sequence > durable_sequence_) {
    return Status::Invalid("cannot release staging log records up to " + std::to_string(sequence) +
                           ": only records up to " + std::to_string(durable_sequence_) +
                           " are durable");
  }
  if (!write_through && sequence > sb_.destaged_sequence) {
    return Status::Invalid("cannot release staging log records up to " + std::to_string(sequence) +
                           ": only records up to " + std::to_string(sb_.destaged_sequence) +
                           " are destaged");
  }
  if (sequence < sb_.oldest_sequence) return Status::Ok();
  const LogSuperblock before = sb_;
  const std::deque<Entry> records_before = records_;
  const uint64_t used_before = used_;
  while (!records_.empty() && records_.front().sequence <= sequence) {
    used_ -= records_.front().size;
    records_.pop_front();
  }
  sb_.oldest_sequence = sequence + 1;
  sb_.oldest_position = PositionOf(sequence + 1);
  if (write_through && sequence > sb_.destaged_sequence) {
    sb_.destaged_sequence = sequence;
    sb_.destaged_position = sb_.oldest_position;
  }
  if (Status st = WriteSuperblock(); !st.ok()) {
    sb_ = before;
    records_ = records_before;
    used_ = used_before;
    return st;
  }
  return Status::Ok();
}

}  // namespace dst::stagelog
