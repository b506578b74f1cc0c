// The internals of Volume's request path, shared by volume.cc (dispatch),
// fanout.cc (member I/O generation, windowing, joining, block status) and
// volume_merge.cc (unaligned requests). Not for use outside volume/.
//
// Threading: the event-loop thread, like Volume.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aggregator/volume/volume.h"
#include "common/join.h"
#include "common/object_pool.h"

namespace dst::volume {

// Zeros written where a member cannot zero natively, one piece at a time.
inline constexpr uint64_t kZeroPieceSize = uint64_t{1} << 20;

// A stretch of the volume that a Fanout sends to the members with one
// operation. Reads and writes are placed by volume offset in `data`; the
// other operations carry no payload and go to each member as one run.
struct Volume::Segment {
  MemberOp op = MemberOp::kRead;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* data = nullptr;  // the buffer of byte `offset` (reads and writes)
};

// One client request on its way to the members: the member I/Os of its
// segments, generated as they are submitted (a huge request never exists as
// a list of pieces), at most kRequestWindow of them in flight, joined by a
// BasicJoin that holds the completion by value. Owned through shared_ptr by
// its starter, then by the callbacks of its parts.
class Volume::Fanout : public std::enable_shared_from_this<Fanout> {
 public:
  // How a modification is ordered against merges (StartModifying).
  enum class Guard { kNone, kCounted, kLocked };

  // op, offset and length are the client's request, for the log.
  Fanout(Volume& volume, MemberOp op, uint64_t offset, uint64_t length)
      : volume_(volume), op_(op), offset_(offset), length_(length), join_(Finisher{this}) {}
  virtual ~Fanout() = default;
  Fanout(const Fanout&) = delete;
  Fanout& operator=(const Fanout&) = delete;

  // At most three segments: a merge's head block, middle and tail block.
  void Add(const Segment& segment) { segments_.at(segment_count_++) = segment; }
  // Submits the first window of parts; completes at once if there are none.
  void Start() {
    Pump();
    join_.Arrive(0);
  }

  bool fua = false;
  bool may_trim = false;   // WRITE_ZEROES may punch holes
  bool fast_zero = false;  // WRITE_ZEROES must be fast or fail
  Guard guard = Guard::kNone;
  RangeLock::Id lock = 0;  // with kLocked: released when the request ends

 protected:
  Volume& volume() { return volume_; }

 private:
  struct Part;  // fanout.cc
  struct Finisher {
    Fanout* self;
    void operator()(int err) const { self->Finish(err); }
  };

  // The request's result, after every part: runs once.
  virtual void Complete(int err) = 0;
  // A part that succeeded, for fanouts that want its answer.
  virtual void Answered(uint32_t /*member*/, MemberIo& /*io*/) {}

  bool NextPiece(MemberExtent* piece, const Segment** segment);
  bool NextExtent(const Segment& segment);
  void Pump();
  void Submit(const MemberExtent& piece, const Segment& segment);
  void FlushAfter(uint32_t member);
  void PartDone(uint32_t member, MemberIo& part, int err);
  void Finish(int err);
  void LogFailure() const;

  Volume& volume_;
  const MemberOp op_;
  const uint64_t offset_;
  const uint64_t length_;
  std::array<Segment, 3> segments_;
  size_t segment_count_ = 0;
  // Where piece generation stands: the current segment; for a read or
  // write, how much of it is mapped (extent by extent, no vector), for the
  // others its runs and the next one; the current extent and how far into it.
  size_t segment_ = 0;
  uint64_t mapped_ = 0;
  std::vector<MemberExtent> runs_;
  size_t next_run_ = 0;
  bool runs_mapped_ = false;
  MemberExtent extent_{};
  bool have_extent_ = false;
  uint64_t within_ = 0;
  bool generated_ = false;  // every piece has been submitted
  size_t in_flight_ = 0;
  size_t failed_ = 0;
  std::string first_failure_;
  BasicJoin<Finisher> join_;
};

// A Fanout that hands its result to `done`, held by value: a read's own
// callback costs no allocation of its own.
template <typename F>
class Volume::FanoutTo final : public Fanout {
 public:
  FanoutTo(F done, Volume& volume, MemberOp op, uint64_t offset, uint64_t length)
      : Fanout(volume, op, offset, length), done_(std::move(done)) {}

 private:
  void Complete(int err) override { done_(err); }
  F done_;
};

template <typename F>
std::shared_ptr<Volume::Fanout> Volume::MakeFanout(F done, MemberOp op, uint64_t offset,
                                                   uint64_t length) {
  return MakePooled<FanoutTo<F>>(std::move(done), *this, op, offset, length);
}

// BLOCK_STATUS: one member I/O per member run; the answers are laid out again
// in volume order, chunk by chunk, and cut to the range the client asked.
class Volume::StatusFanout final : public Fanout {
 public:
  StatusFanout(Volume& volume, uint64_t offset, uint64_t length, ExtentsDone done)
      : Fanout(volume, MemberOp::kBlockStatus, offset, length),
        offset_(offset),
        length_(length),
        answers_(volume.members_.size()),
        done_(std::move(done)) {}

  uint64_t start = 0;                // where `chunks` begin: offset, down to a block
  std::vector<MemberExtent> chunks;  // the layout extents from `start`, in volume order

 private:
  // A member's extents for its run, consumed in order as its chunks come up.
  struct Answer {
    std::vector<AllocationExtent> extents;
    size_t next = 0;
    uint64_t used = 0;  // of extents[next]
  };
  // The reply being built: skips what precedes the client's offset, merges
  // neighbours of one kind, and stops at the end of the client's range.
  struct Reply {
    uint64_t skip;
    uint64_t left;
    std::vector<AllocationExtent> extents;
    // False once the client's range is covered.
    bool Append(uint64_t length, uint32_t flags);
  };

  void Answered(uint32_t member, MemberIo& io) override {
    answers_[member].extents = std::move(io.extents);
  }
  void Complete(int err) override;
  // Appends what the member said about `chunk`; false when the reply ends
  // there (the member said no more, which NBD allows, or the range is covered).
  bool AppendChunk(const MemberExtent& chunk, Reply& reply);

  const uint64_t offset_;
  const uint64_t length_;
  std::vector<Answer> answers_;  // by member
  ExtentsDone done_;
};

}  // namespace dst::volume
