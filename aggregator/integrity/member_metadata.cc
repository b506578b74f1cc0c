#include "aggregator/integrity/member_metadata.h"

#include <libnbd.h>

#include <algorithm>
#include <cerrno>
#include <span>

#include "aggregator/member/libnbd_error.h"
#include "common/progress.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

using Clock = std::chrono::steady_clock;

// WRITE_ZEROES carries no payload, but NBD's length field is 32 bits (without extended headers),
// and the serve path cuts zeroes at 1 GiB too.
constexpr uint64_t kMaxZeroPiece = uint64_t{1} << 30;
// Writes of zeros, for exports that cannot zero, are cut to this (or the export's maximum).
constexpr uint64_t kZeroWriteSize = uint64_t{1} << 20;

// One blocking libnbd connection to a member. Closed (after a polite NBD_CMD_DISC) when it dies.
class Connection {
 public:
  Connection(std::string uri, const member::MemberTls& tls) : uri_(std::move(uri)), tls_(tls) {}
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects within kMetadataConnectTimeout and records the export's properties.
  Status Open();

  uint64_t size() const { return size_; }
  bool read_only() const { return read_only_; }
  uint32_t min_block() const { return min_block_; }

  Status Read(uint64_t offset, std::span<uint8_t> out);
  Status Write(uint64_t offset, std::span<const uint8_t> data);
  // Zeros [offset, offset + length), with WRITE_ZEROES if the export can, else with writes.
  Status Zero(uint64_t offset, uint64_t length);
  Status Flush();

 private:
  // "member URI: WHAT: libnbd's message", with libnbd's errno (EIO if it has none).
  Status Failure(std::string_view what) const;
  Status Connect();
  Status WaitUntilConnected();
  void ReadProperties();
  Status WriteZeros(uint64_t offset, uint64_t length);

  std::string uri_;
  const member::MemberTls& tls_;
  nbd_handle* handle_ = nullptr;
  uint64_t size_ = 0;
  bool read_only_ = false;
  bool can_zero_ = false;
  uint32_t min_block_ = 1;
  uint64_t max_request_ = kZeroWriteSize;
};

Connection::~Connection() {
  if (handle_ == nullptr) return;
  if (nbd_aio_is_ready(handle_) == 1) nbd_shutdown(handle_, 0);  // best effort
  nbd_close(handle_);
}

Status Connection::Failure(std::string_view what) const {
  const int err = nbd_get_errno();
  const std::string message = member::LibnbdMessage(nbd_get_error());
  // libnbd's connect errors already begin with "connect: ".
  const bool said = message.starts_with(std::string(what) + ": ");
  return Status::Error(err != 0 ? err : EIO,
                       "member " + uri_ + ": " + (said ? "" : std::string(what) + ": ") + message);
}

Status Connection::Open() {
  handle_ = nbd_create();
  if (handle_ == nullptr) return Failure("create libnbd handle");
  DST_RETURN_IF_ERROR(member::ExplainConnectFailure(Connect(), uri_));
  ReadProperties();
  return Status::Ok();
}

// With the member TLS options, as the data path connects.
Status Connection::Connect() {
  DST_RETURN_IF_ERROR(member::ApplyMemberTls(handle_, tls_, uri_).Wrap("member " + uri_));
  if (nbd_aio_connect_uri(handle_, uri_.c_str()) == -1) return Failure("connect");
  return WaitUntilConnected();
}

// The blocking nbd_connect_uri has no deadline; polling the asynchronous connect gives one.
Status Connection::WaitUntilConnected() {
  const auto deadline = Clock::now() + kMetadataConnectTimeout;
  while (nbd_aio_is_connecting(handle_) == 1) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return Status::Error(ETIMEDOUT, "member " + uri_ + ": connect: no answer within " +
                                          std::to_string(kMetadataConnectTimeout.count() / 1000) +
                                          " s");
    }
    if (nbd_poll(handle_, static_cast<int>(left.count())) == -1) return Failure("connect");
  }
  if (nbd_aio_is_ready(handle_) == 1) return Status::Ok();
  return Status::Error(ECONNRESET,
                       "member " + uri_ + ": connect: the server closed the connection");
}

void Connection::ReadProperties() {
  const int64_t size = nbd_get_size(handle_);
  size_ = size > 0 ? static_cast<uint64_t>(size) : 0;
  read_only_ = nbd_is_read_only(handle_) == 1;
  can_zero_ = nbd_can_zero(handle_) == 1;
  const int64_t minimum = nbd_get_block_size(handle_, LIBNBD_SIZE_MINIMUM);
  const int64_t maximum = nbd_get_block_size(handle_, LIBNBD_SIZE_MAXIMUM);
  if (minimum > 0) min_block_ = static_cast<uint32_t>(minimum);
  if (maximum > 0) max_request_ = std::min<uint64_t>(kZeroWriteSize, maximum);
}

Status Connection::Read(uint64_t offset, std::span<uint8_t> out) {
  if (nbd_pread(handle_, out.data(), out.size(), offset, 0) == -1) {
    return Failure("read " + std::to_string(out.size()) + " bytes at " + std::to_string(offset));
  }
  return Status::Ok();
}

Status Connection::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (nbd_pwrite(handle_, data.data(), data.size(), offset, 0) == -1) {
    return Failure("write " + std::to_string(data.size()) + " bytes at " + std::to_string(offset));
  }
  return Status::Ok();
}

Status Connection::Zero(uint64_t offset, uint64_t length) {
  if (!can_zero_) return WriteZeros(offset, length);
  Progress progress("member " + uri_ + ": zeroing", length, Progress::StderrIsTerminal());
  for (uint64_t done = 0; done < length;) {
    const uint64_t piece = std::min(length - done, kMaxZeroPiece);
    if (nbd_zero(handle_, piece, offset + done, 0) == -1)
      return Failure("zero " + std::to_string(piece) + " bytes at " +
                     std::to_string(offset + done));
    done += piece;
    progress.Update(done);
  }
  progress.Finish();
  return Status::Ok();
}

// The slow path, for exports without WRITE_ZEROES: a large member takes
// minutes, hence the progress.
Status Connection::WriteZeros(uint64_t offset, uint64_t length) {
  const std::vector<uint8_t> zeros(std::min(length, max_request_), 0);
  Progress progress("member " + uri_ + ": writing zeros", length, Progress::StderrIsTerminal());
  for (uint64_t done = 0; done < length;) {
    const uint64_t piece = std::min<uint64_t>(length - done, zeros.size());
    DST_RETURN_IF_ERROR(Write(offset + done, {zeros.data(), piece}));
    done += piece;
    progress.Update(done);
  }
  progress.Finish();
  return Status::Ok();
}

Status Connection::Flush() {
  if (nbd_flush(handle_, 0) == -1) return Failure("flush");
  return Status::Ok();
}

// Decode() says why a slot is unusable by its errno (superblock.h); a superblock that decodes but
// carries the other slot's event was written to the wrong place.
SlotReport ClassifySlot(std::span<const uint8_t> slot, uint32_t index) {
  SlotReport report;
  report.detail = Decode(slot, &report.superblock);
  if (report.detail.ok() && NextSlot(report.superblock.event) != index) {
    report.detail =
        Status::Invalid("superblock with event " + std::to_string(report.superblock.event) +
                        " belongs in slot " + std::to_string(NextSlot(report.superblock.event)));
    report.state = SlotState::kInvalid;
    return report;
  }
  switch (report.detail.err()) {
    case 0:
      report.state = SlotState::kValid;
      break;
    case ENOENT:
      report.state = SlotState::kAbsent;
      break;
    case EIO:
      report.state = SlotState::kTorn;
      break;
    case ENOTSUP:
      report.state = SlotState::kNewer;
      break;
    default:
      report.state = SlotState::kInvalid;
  }
  return report;
}

// An export too small to hold the slots has no superblock; there is nothing to read.
void ReportTooSmall(uint64_t size, MemberReadResult* out) {
  const Status absent =
      Status::Error(ENOENT, "no dst superblock: the export is " + std::to_string(size) +
                                " bytes, smaller than the two superblock slots (8 KiB)");
  for (SlotReport& slot : out->slots) {
    slot.state = SlotState::kAbsent;
    slot.detail = absent;
  }
  out->choice_status = absent;
}

Status ReadSlots(Connection& connection, MemberReadResult* out) {
  if (connection.size() < kSlotCount * kSlotSize) {
    ReportTooSmall(connection.size(), out);
    return Status::Ok();
  }
  std::vector<uint8_t> both(kSlotCount * kSlotSize);
  DST_RETURN_IF_ERROR(connection.Read(0, both));
  for (uint32_t i = 0; i < kSlotCount; ++i) {
    out->raw_slots[i].assign(both.begin() + SlotOffset(i), both.begin() + SlotOffset(i + 1));
    out->slots[i] = ClassifySlot(out->raw_slots[i], i);
  }
  out->choice_status = ChooseSlot(out->raw_slots[0], out->raw_slots[1], &out->choice);
  if (!out->HasMagic()) {  // the common case deserves one short reason rather than two long ones
    out->choice_status =
        Status::Error(ENOENT, "no dst superblock: neither slot has the magic DSTMEMB1");
  }
  return Status::Ok();
}

// The checks WriteNewMember makes before its first write.
Status CheckWritable(const Connection& connection, const std::string& uri, const Superblock& sb) {
  if (connection.read_only()) {
    return Status::Error(EROFS, "member " + uri + " is read-only");
  }
  if (connection.size() != sb.geometry.member_size) {
    return Status::Invalid("member " + uri + " is " + std::to_string(connection.size()) +
                           " bytes now, not the " + std::to_string(sb.geometry.member_size) +
                           " it was planned for");
  }
  if (connection.min_block() > kSlotSize) {
    return Status::Invalid("member " + uri + " needs I/O in units of " +
                           FormatSize(connection.min_block()) +
                           ", more than one superblock slot (" + FormatSize(kSlotSize) + ")");
  }
  return Status::Ok();
}

using EncodedSlots = std::array<std::array<uint8_t, kSlotSize>, kSlotCount>;

// Slot i gets event i, so NextSlot() puts each where it belongs.
Status EncodeSlots(const Superblock& sb, EncodedSlots* out) {
  for (uint32_t i = 0; i < kSlotCount; ++i) {
    Superblock copy = sb;
    copy.event = i;
    DST_RETURN_IF_ERROR(Encode(copy, (*out)[i]));
  }
  return Status::Ok();
}

}  // namespace

std::string_view SlotStateName(SlotState state) {
  switch (state) {
    case SlotState::kValid:
      return "valid";
    case SlotState::kAbsent:
      return "absent";
    case SlotState::kTorn:
      return "torn";
    case SlotState::kInvalid:
      return "invalid";
    case SlotState::kNewer:
      return "newer";
  }
  return "unknown";
}

bool MemberReadResult::HasMagic() const {
  return std::any_of(slots.begin(), slots.end(),
                     [](const SlotReport& s) { return s.state != SlotState::kAbsent; });
}

Status ReadSuperblocks(const std::string& uri, const member::MemberTls& tls,
                       MemberReadResult* out) {
  Connection connection(uri, tls);
  DST_RETURN_IF_ERROR(connection.Open());
  MemberReadResult result;
  result.export_size = connection.size();
  result.read_only = connection.read_only();
  result.min_block_size = connection.min_block();
  DST_RETURN_IF_ERROR(ReadSlots(connection, &result));
  *out = std::move(result);
  return Status::Ok();
}

Status WriteNewMember(const std::string& uri, const member::MemberTls& tls, const Superblock& sb) {
  EncodedSlots slots;
  DST_RETURN_IF_ERROR(EncodeSlots(sb, &slots).Wrap("member " + uri));
  Connection connection(uri, tls);
  DST_RETURN_IF_ERROR(connection.Open());
  DST_RETURN_IF_ERROR(CheckWritable(connection, uri, sb));
  const MemberGeometry& g = sb.geometry;
  DST_RETURN_IF_ERROR(connection.Zero(g.superblocks.offset, g.superblocks.size));
  DST_RETURN_IF_ERROR(connection.Flush());
  DST_RETURN_IF_ERROR(connection.Zero(g.superblocks.end(), g.data.end() - g.superblocks.end()));
  DST_RETURN_IF_ERROR(connection.Flush());
  for (uint32_t i = 0; i < kSlotCount; ++i)
    DST_RETURN_IF_ERROR(connection.Write(SlotOffset(i), slots[i]));
  return connection.Flush();
}

Status WriteSuperblock(const std::string& uri, const member::MemberTls& tls, const Superblock& sb) {
  std::array<uint8_t, kSlotSize> slot;
  DST_RETURN_IF_ERROR(Encode(sb, slot).Wrap("member " + uri));
  Connection connection(uri, tls);
  DST_RETURN_IF_ERROR(connection.Open());
  DST_RETURN_IF_ERROR(CheckWritable(connection, uri, sb));
  DST_RETURN_IF_ERROR(connection.Write(SlotOffset(NextSlot(sb.event)), slot));
  return connection.Flush();
}

}  // namespace dst::integrity
