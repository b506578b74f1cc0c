#include "aggregator/volume/volume.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/log.h"

namespace dst::volume {

namespace {

// TRIM and WRITE_ZEROES carry no payload, so clients send them far larger than
// reads and writes (the kernel trims whole devices); members get them in
// pieces that fit NBD's 32-bit length with room to spare.
constexpr uint64_t kMaxNoPayloadPiece = uint64_t{1} << 30;
// Zeros written where a member cannot zero natively, one piece at a time.
constexpr uint64_t kZeroBufferSize = uint64_t{1} << 20;

const uint8_t* ZeroBuffer() {
  static const std::vector<uint8_t> zeros(kZeroBufferSize, 0);
  return zeros.data();
}

}  // namespace

// A client request in flight: counts its outstanding member I/Os and calls
// `done` once, with the first error, when the last one completes.
class Volume::ParentRequest {
 public:
  explicit ParentRequest(Done done) : done_(std::move(done)) {}
  // A read's own callback, held as it is rather than wrapped in a Done (one
  // allocation less per read).
  explicit ParentRequest(ReadDone done) : read_done_(std::move(done)) {}

  // Called once per member I/O before it is submitted.
  void AddPart() { ++outstanding_; }
  void PartDone(int err) {
    if (err != 0 && error_ == 0) error_ = err;
    if (--outstanding_ > 0) return;
    if (read_done_)
      read_done_(error_, {});
    else
      done_(error_);
  }
  // Drops the submitter's own reference once every part has been submitted,
  // so that an early completion cannot finish the parent while parts are
  // still being added.
  void Finish() { PartDone(0); }

 private:
  Done done_;
  ReadDone read_done_;
  size_t outstanding_ = 1;  // the submitter's reference
  int error_ = 0;
};

Status Volume::Create(std::string name, std::string description, LayoutKind kind,
                      uint64_t chunk_size, std::vector<MemberTarget*> members,
                      std::unique_ptr<Volume>* out) {
  std::vector<uint64_t> sizes;
  for (const MemberTarget* m : members)
    sizes.push_back(m->capabilities().size);
  std::unique_ptr<Layout> layout;
  DST_RETURN_IF_ERROR(
      MakeLayout(kind, std::move(sizes), chunk_size, &layout).Wrap("volume " + name));
  out->reset(
      new Volume(std::move(name), std::move(description), std::move(layout), std::move(members)));
  return Status::Ok();
}

Volume::Volume(std::string name, std::string description, std::unique_ptr<Layout> layout,
               std::vector<MemberTarget*> members)
    : name_(std::move(name)),
      description_(std::move(description)),
      layout_(std::move(layout)),
      members_(std::move(members)) {
  DeriveCapabilities();
}

void Volume::DeriveCapabilities() {
  caps_.can_trim = caps_.can_fast_zero = caps_.can_cache = caps_.can_block_status = false;
  for (const MemberTarget* m : members_) {
    const MemberCapabilities& mc = m->capabilities();
    caps_.read_only |= mc.read_only;
    // One capable member is enough: the others skip the command (trim, cache)
    // or report plain data (block status).
    caps_.can_trim |= mc.can_trim;
    caps_.can_cache |= mc.can_cache;
    caps_.can_block_status |= mc.can_block_status;
    caps_.min_block = std::max(caps_.min_block, mc.min_block);
    caps_.preferred_block = std::max(caps_.preferred_block, mc.preferred_block);
  }
  // FAST_ZERO is a promise for the whole range, so every member must keep it.
  caps_.can_fast_zero = std::all_of(members_.begin(), members_.end(), [](const MemberTarget* m) {
    return m->capabilities().can_zero && m->capabilities().can_fast_zero;
  });
}

std::vector<MemberExtent> Volume::Pieces(uint64_t offset, uint64_t length,
                                         uint64_t max_piece) const {
  std::vector<MemberExtent> extents;
  layout_->AppendMap(offset, length, extents);
  // Usually every extent fits: no second vector then.
  const auto fits = [&](const MemberExtent& e) {
    return e.length <= (max_piece ? max_piece : members_[e.member]->capabilities().max_request);
  };
  if (std::all_of(extents.begin(), extents.end(), fits)) return extents;
  std::vector<MemberExtent> pieces;
  pieces.reserve(extents.size());
  for (const MemberExtent& e : extents) {
    const uint64_t limit = max_piece ? max_piece : members_[e.member]->capabilities().max_request;
    SplitByMaximum(e, limit, pieces);
  }
  return pieces;
}

void Volume::SubmitPiece(const std::shared_ptr<ParentRequest>& parent, const MemberExtent& piece,
                         MemberIo io) {
  MemberTarget* member = members_[piece.member];
  auto member_io = std::make_shared<MemberIo>(std::move(io));
  member_io->offset = piece.member_offset;
  member_io->length = piece.length;
  const MemberIo* part = member_io.get();  // alive while its own done runs
  member_io->done = [this, parent, part, piece](int err) {
    if (err != 0) LogPartFailure(*part, piece, err);
    parent->PartDone(err);
  };
  if (member_io->fua && !member->capabilities().can_fua) {
    // A member without FUA gets the write, then a flush, before the part is done.
    member_io->fua = false;
    if (member->capabilities().can_flush) {
      member_io->done = [this, parent, member, part, piece](int err) {
        if (err != 0) {
          LogPartFailure(*part, piece, err);
          return parent->PartDone(err);
        }
        auto flush = std::make_shared<MemberIo>();
        flush->op = MemberOp::kFlush;
        const MemberIo* flush_part = flush.get();
        flush->done = [this, parent, flush_part, piece](int flush_err) {
          if (flush_err != 0) LogPartFailure(*flush_part, piece, flush_err);
          parent->PartDone(flush_err);
        };
        member->Submit(std::move(flush));
      };
    }
  }
  parent->AddPart();
  member->Submit(std::move(member_io));
}

// The one line a failed member I/O leaves: the volume range it served, and
// the member's own account of what happened.
void Volume::LogPartFailure(const MemberIo& part, const MemberExtent& piece, int err) const {
  const std::string what = part.op == MemberOp::kFlush
                               ? "flush"
                               : std::string(MemberOpName(part.op)) + " of " +
                                     std::to_string(piece.length) + " bytes at volume offset " +
                                     std::to_string(piece.volume_offset);
  const std::string why =
      part.failure.empty() ? "member " + members_[piece.member]->name() + ": " + std::strerror(err)
                           : part.failure;
  LOG_ERROR("volume %s: %s failed: %s", name_.c_str(), what.c_str(), why.c_str());
}

void Volume::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  SubmitReads(std::make_shared<ParentRequest>(std::move(done)), offset, length, buf);
}

void Volume::ReadData(uint64_t offset, uint64_t length, uint8_t* buf, Done done) {
  SubmitReads(std::make_shared<ParentRequest>(std::move(done)), offset, length, buf);
}

void Volume::SubmitReads(const std::shared_ptr<ParentRequest>& parent, uint64_t offset,
                         uint64_t length, uint8_t* buf) {
  for (const MemberExtent& piece : Pieces(offset, length, 0)) {
    MemberIo io;
    io.op = MemberOp::kRead;
    io.data = buf + (piece.volume_offset - offset);  // reassembled in place, in order
    SubmitPiece(parent, piece, std::move(io));
  }
  parent->Finish();
}

void Volume::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) {
  auto parent = std::make_shared<ParentRequest>(std::move(done));
  for (const MemberExtent& piece : Pieces(offset, length, 0)) {
    MemberIo io;
    io.op = MemberOp::kWrite;
    io.data = const_cast<uint8_t*>(buf) + (piece.volume_offset - offset);  // only read
    io.fua = fua;
    SubmitPiece(parent, piece, std::move(io));
  }
  parent->Finish();
}

void Volume::Flush(Done done) {
  auto parent = std::make_shared<ParentRequest>(std::move(done));
  for (uint32_t i = 0; i < members_.size(); ++i) {
    if (!members_[i]->capabilities().can_flush) continue;  // nothing it could make durable
    MemberIo io;
    io.op = MemberOp::kFlush;
    SubmitPiece(parent, MemberExtent{i, 0, 0, 0}, std::move(io));
  }
  parent->Finish();
}

void Volume::Trim(uint64_t offset, uint64_t length, bool fua, Done done) {
  auto parent = std::make_shared<ParentRequest>(std::move(done));
  for (const MemberExtent& piece : Pieces(offset, length, kMaxNoPayloadPiece)) {
    // Trim is advisory: a member that cannot trim keeps its data.
    if (!members_[piece.member]->capabilities().can_trim) continue;
    MemberIo io;
    io.op = MemberOp::kTrim;
    io.fua = fua;
    SubmitPiece(parent, piece, std::move(io));
  }
  parent->Finish();
}

void Volume::Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
                  Done done) {
  auto parent = std::make_shared<ParentRequest>(std::move(done));
  for (const MemberExtent& piece : Pieces(offset, length, kMaxNoPayloadPiece))
    ZeroPiece(parent, piece, may_trim, fast_only, fua);
  parent->Finish();
}

void Volume::ZeroPiece(const std::shared_ptr<ParentRequest>& parent, const MemberExtent& piece,
                       bool may_trim, bool fast_only, bool fua) {
  const MemberCapabilities& mc = members_[piece.member]->capabilities();
  if (mc.can_zero) {
    MemberIo io;
    io.op = MemberOp::kZero;
    io.may_trim = may_trim;
    io.fast_zero = fast_only;
    io.fua = fua;
    SubmitPiece(parent, piece, std::move(io));
    return;
  }
  if (fast_only) {  // writing zeros is exactly the slow path the client refused
    parent->AddPart();
    parent->PartDone(ENOTSUP);
    return;
  }
  std::vector<MemberExtent> writes;
  SplitByMaximum(piece, std::min<uint64_t>(kZeroBufferSize, mc.max_request), writes);
  for (const MemberExtent& w : writes) {
    MemberIo io;
    io.op = MemberOp::kWrite;
    io.data = const_cast<uint8_t*>(ZeroBuffer());  // only read
    io.fua = fua;
    SubmitPiece(parent, w, std::move(io));
  }
}

void Volume::Cache(uint64_t offset, uint64_t length, Done done) {
  auto parent = std::make_shared<ParentRequest>(std::move(done));
  for (const MemberExtent& piece : Pieces(offset, length, kMaxNoPayloadPiece)) {
    if (!members_[piece.member]->capabilities().can_cache) continue;  // a hint only
    MemberIo io;
    io.op = MemberOp::kCache;
    SubmitPiece(parent, piece, std::move(io));
  }
  parent->Finish();
}

void Volume::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  // Each piece's answer is kept in its own slot and joined in volume order
  // when all are in; a short answer ends the reply there (NBD allows that).
  struct Slot {
    uint64_t length;
    bool reported;  // false: member without base:allocation, so "data"
    std::vector<AllocationExtent> extents;
  };
  auto slots = std::make_shared<std::vector<Slot>>();
  auto parent = std::make_shared<ParentRequest>([slots, done](int err) {
    std::vector<AllocationExtent> out;
    for (const Slot& slot : *slots) {
      if (!slot.reported) {
        out.push_back({slot.length, 0});
        continue;
      }
      uint64_t covered = 0;
      for (const AllocationExtent& e : slot.extents) {
        const uint64_t len = std::min(e.length, slot.length - covered);
        if (len == 0) break;
        out.push_back({len, e.flags});
        covered += len;
      }
      if (covered < slot.length) break;
    }
    done(err, std::move(out));
  });
  const std::vector<MemberExtent> pieces = Pieces(offset, length, kMaxNoPayloadPiece);
  slots->reserve(pieces.size());  // slots are filled in place by index below
  for (const MemberExtent& piece : pieces) {
    MemberTarget* member = members_[piece.member];
    const bool reported = member->capabilities().can_block_status;
    slots->push_back({piece.length, reported, {}});
    if (!reported) continue;
    auto io = std::make_shared<MemberIo>();
    io->op = MemberOp::kBlockStatus;
    io->offset = piece.member_offset;
    io->length = piece.length;
    const size_t index = slots->size() - 1;
    MemberIo* raw = io.get();  // alive while its own done runs
    io->done = [parent, slots, index, raw](int err) {
      (*slots)[index].extents = std::move(raw->extents);
      parent->PartDone(err);
    };
    parent->AddPart();
    member->Submit(std::move(io));
  }
  parent->Finish();
}

}  // namespace dst::volume
