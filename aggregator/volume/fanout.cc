#include "aggregator/volume/fanout.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "common/object_pool.h"

namespace dst::volume {

namespace {

const uint8_t* ZeroBuffer() {
  static const std::vector<uint8_t> zeros(kZeroPieceSize, 0);
  return zeros.data();
}

bool HasPayload(MemberOp op) {
  return op == MemberOp::kRead || op == MemberOp::kWrite;
}

bool Modifies(MemberOp op) {
  return op == MemberOp::kWrite || op == MemberOp::kTrim || op == MemberOp::kZero;
}

}  // namespace

bool Volume::Fanout::NextPiece(MemberExtent* piece, const Segment** segment) {
  while (!have_extent_) {
    if (segment_ == segment_count_) return false;
    if (NextExtent(segments_[segment_])) {
      have_extent_ = true;
      within_ = 0;
      break;
    }
    ++segment_;
    mapped_ = 0;
    runs_.clear();
    next_run_ = 0;
    runs_mapped_ = false;
  }
  const Segment& s = segments_[segment_];
  const uint64_t length =
      std::min(extent_.length - within_, volume_.PieceLimit(extent_.member, s.op));
  // Within a run, volume offsets are not contiguous; only reads and writes,
  // whose extents are, use them.
  *piece = {extent_.member, extent_.member_offset + within_, length,
            extent_.volume_offset + within_};
  *segment = &s;
  within_ += length;
  have_extent_ = within_ < extent_.length;
  return true;
}

// The next extent of `segment` into extent_; false when it has no more. A
// read or write is mapped one extent at a time; the others are mapped to
// member runs (or, for a flush, the members) once, skipping the members that
// do not take part.
bool Volume::Fanout::NextExtent(const Segment& segment) {
  if (HasPayload(segment.op)) {
    extent_ = volume_.layout_->FirstExtent(segment.offset + mapped_, segment.length - mapped_);
    mapped_ += extent_.length;
    return extent_.length > 0;
  }
  if (!runs_mapped_) {
    runs_mapped_ = true;
    if (segment.op == MemberOp::kFlush) {
      for (uint32_t m = 0; m < volume_.members_.size(); ++m)
        runs_.push_back({m, 0, 0, 0});
    } else {
      volume_.layout_->AppendRuns(segment.offset, segment.length, runs_);
    }
    std::erase_if(runs_,
                  [&](const MemberExtent& e) { return !volume_.Takes(e.member, segment.op); });
  }
  if (next_run_ == runs_.size()) return false;
  extent_ = runs_[next_run_++];
  return true;
}

void Volume::Fanout::Pump() {
  MemberExtent piece;
  const Segment* segment = nullptr;
  // After a failure the request has failed: nothing more is started.
  while (!generated_ && in_flight_ < kRequestWindow && failed_ == 0) {
    if (!NextPiece(&piece, &segment)) {
      generated_ = true;
      return;
    }
    Submit(piece, *segment);
  }
}

// One member I/O of a fanout, with what its answer needs, in one allocation: its callback
// captures only a pointer to it, which std::function keeps without allocating. It holds the
// fanout until it is answered.
struct Volume::Fanout::Part : MemberIo {
  std::shared_ptr<Fanout> fanout;
  uint32_t member = 0;
  bool flush_after = false;
};

void Volume::Fanout::Submit(const MemberExtent& piece, const Segment& segment) {
  MemberTarget* member = volume_.members_[piece.member];
  const MemberCapabilities& mc = member->capabilities();
  auto io = MakePooled<Part>();
  io->op = segment.op;
  io->offset = piece.member_offset;
  io->length = piece.length;
  if (segment.data) io->data = segment.data + (piece.volume_offset - segment.offset);
  io->fua = fua && Modifies(segment.op);
  if (segment.op == MemberOp::kZero && mc.can_zero) {
    io->may_trim = may_trim;
    io->fast_zero = fast_zero;
  } else if (segment.op == MemberOp::kZero) {
    io->op = MemberOp::kWrite;
    io->data = const_cast<uint8_t*>(ZeroBuffer());  // only read
  }
  // A member without FUA gets the write, then a flush, before the part is done.
  const bool flush_after = io->fua && !mc.can_fua && mc.can_flush;
  if (!mc.can_fua) io->fua = false;
  io->fanout = shared_from_this();
  io->member = piece.member;
  io->flush_after = flush_after;
  Part* part = io.get();  // alive while its own done runs
  io->done = [part](int err) {
    if (err == 0 && part->flush_after) return part->fanout->FlushAfter(part->member);
    part->fanout->PartDone(part->member, *part, err);
  };
  ++in_flight_;
  join_.Add();
  member->Submit(std::move(io));
}

void Volume::Fanout::FlushAfter(uint32_t member) {
  auto flush = MakePooled<MemberIo>();
  flush->op = MemberOp::kFlush;
  MemberIo* part = flush.get();
  flush->done = [self = shared_from_this(), part, member](int err) {
    self->PartDone(member, *part, err);
  };
  volume_.members_[member]->Submit(std::move(flush));
}

void Volume::Fanout::PartDone(uint32_t member, MemberIo& part, int err) {
  --in_flight_;
  if (err == 0) {
    Answered(member, part);
  } else if (failed_++ == 0) {
    first_failure_ = part.failure.empty()
                         ? "member " + volume_.members_[member]->name() + ": " + std::strerror(err)
                         : part.failure;
  }
  Pump();  // before arriving: the join must not complete while pieces remain
  join_.Arrive(err);
}

void Volume::Fanout::Finish(int err) {
  if (failed_ > 0) LogFailure();
  volume_.EndModifying(*this);
  Complete(err);
}

// The one line a failed request leaves: the volume range the client asked
// for, and the first member's own account of what happened.
void Volume::Fanout::LogFailure() const {
  const std::string what = op_ == MemberOp::kFlush
                               ? "flush"
                               : std::string(MemberOpName(op_)) + " of " + std::to_string(length_) +
                                     " bytes at volume offset " + std::to_string(offset_);
  const std::string more =
      failed_ > 1 ? " (and " + std::to_string(failed_ - 1) + " more of its member I/Os)" : "";
  LOG_ERROR("volume %s: %s failed: %s%s", volume_.name_.c_str(), what.c_str(),
            first_failure_.c_str(), more.c_str());
}

// Block status: the answers laid out again in volume order.

bool Volume::StatusFanout::Reply::Append(uint64_t length, uint32_t flags) {
  const uint64_t skipped = std::min(skip, length);
  skip -= skipped;
  length = std::min(length - skipped, left);
  left -= length;
  if (length > 0 && !extents.empty() && extents.back().flags == flags)
    extents.back().length += length;
  else if (length > 0)
    extents.push_back({length, flags});
  return left > 0;
}

bool Volume::StatusFanout::AppendChunk(const MemberExtent& chunk, Reply& reply) {
  if (!volume().Takes(chunk.member, MemberOp::kBlockStatus))
    return reply.Append(chunk.length, 0);  // no base:allocation: data
  Answer& answer = answers_[chunk.member];
  for (uint64_t need = chunk.length; need > 0;) {
    if (answer.next == answer.extents.size()) return false;
    const AllocationExtent& e = answer.extents[answer.next];
    const uint64_t take = std::min(need, e.length - answer.used);
    if (!reply.Append(take, e.flags)) return false;
    need -= take;
    answer.used += take;
    if (answer.used >= e.length) {
      ++answer.next;
      answer.used = 0;
    }
  }
  return true;
}

void Volume::StatusFanout::Complete(int err) {
  Reply reply{offset_ - start, length_, {}};
  if (err == 0) {
    for (const MemberExtent& chunk : chunks)
      if (!AppendChunk(chunk, reply)) break;
  }
  done_(err, std::move(reply.extents));
}

}  // namespace dst::volume
