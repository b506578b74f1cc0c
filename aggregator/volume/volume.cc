#include "aggregator/volume/volume.h"

#include <algorithm>
#include <cerrno>
#include <string>

#include "aggregator/volume/fanout.h"

namespace dst::volume {

Status Volume::Create(std::string name, std::string description, LayoutKind kind,
                      uint64_t chunk_size, std::vector<MemberTarget*> members,
                      std::unique_ptr<Volume>* out) {
  std::vector<uint64_t> sizes;
  for (const MemberTarget* m : members)
    sizes.push_back(m->capabilities().size);
  std::unique_ptr<Layout> layout;
  DST_RETURN_IF_ERROR(
      MakeLayout(kind, std::move(sizes), chunk_size, &layout).Wrap("volume " + name));
  std::unique_ptr<Volume> volume(
      new Volume(std::move(name), std::move(description), std::move(layout), std::move(members)));
  DST_RETURN_IF_ERROR(volume->CheckBlockAlignment().Wrap("volume " + volume->name_));
  *out = std::move(volume);
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

// Whole blocks of the volume must be whole blocks of its members, or no
// request, aligned or merged, could reach a member aligned.
Status Volume::CheckBlockAlignment() const {
  const uint64_t block = caps_.min_block;
  if (block <= 1) return Status::Ok();
  if (layout_->kind() == LayoutKind::kStripe) {
    const uint64_t chunk = static_cast<const StripeLayout&>(*layout_).chunk_size();
    if (chunk % block != 0)
      return Status::Invalid("chunk size " + std::to_string(chunk) +
                             " is not a multiple of the members' minimum block size " +
                             std::to_string(block));
    return Status::Ok();
  }
  for (uint32_t m = 0; m < members_.size(); ++m) {
    if (layout_->member_usable_size(m) == 0) continue;
    const uint64_t start = layout_->VolumeOffset(m, 0);
    if (start % block != 0)
      return Status::Invalid(
          "member " + std::to_string(m) + " starts at volume offset " + std::to_string(start) +
          ", not a multiple of the members' minimum block size " + std::to_string(block));
  }
  return Status::Ok();
}

bool Volume::Takes(uint32_t member, MemberOp op) const {
  const MemberCapabilities& mc = members_[member]->capabilities();
  switch (op) {
    case MemberOp::kTrim:
      return mc.can_trim;  // advisory: a member that cannot trim keeps its data
    case MemberOp::kCache:
      return mc.can_cache;  // a hint only
    case MemberOp::kBlockStatus:
      return mc.can_block_status;  // the others report data
    case MemberOp::kFlush:
      return mc.can_flush;  // nothing it could make durable
    default:
      return true;
  }
}

uint64_t Volume::PieceLimit(uint32_t member, MemberOp op) const {
  const MemberCapabilities& mc = members_[member]->capabilities();
  // Pieces cut at the maximum stay aligned (the spec makes it a multiple of
  // the minimum; a member that says otherwise is not trusted on it).
  const uint64_t block = std::max<uint64_t>(mc.min_block, 1);
  const uint64_t max_request = std::max(block, mc.max_request - mc.max_request % block);
  switch (op) {
    case MemberOp::kRead:
    case MemberOp::kWrite:
      return max_request;
    case MemberOp::kZero:
      return mc.can_zero ? kMaxNoPayloadPiece : std::min(kZeroPieceSize, max_request);
    default:
      return kMaxNoPayloadPiece;
  }
}

bool Volume::Aligned(uint64_t offset, uint64_t length) const {
  return offset % caps_.min_block == 0 && length % caps_.min_block == 0;
}

void Volume::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  auto to_client = [done = std::move(done)](int err) { done(err, {}); };
  if (!Aligned(offset, length)) return ReadUnaligned(offset, length, buf, std::move(to_client));
  auto fanout = MakeFanout(std::move(to_client), MemberOp::kRead, offset, length);
  fanout->Add({MemberOp::kRead, offset, length, buf});  // reassembled in place, in order
  fanout->Start();
}

void Volume::ReadData(uint64_t offset, uint64_t length, uint8_t* buf, Done done) {
  if (!Aligned(offset, length)) return ReadUnaligned(offset, length, buf, std::move(done));
  auto fanout = MakeFanout(std::move(done), MemberOp::kRead, offset, length);
  fanout->Add({MemberOp::kRead, offset, length, buf});
  fanout->Start();
}

void Volume::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) {
  if (!Aligned(offset, length))
    return MergeEdges(MemberOp::kWrite, offset, length, buf, fua, false, std::move(done));
  auto fanout = MakeFanout(std::move(done), MemberOp::kWrite, offset, length);
  fanout->Add({MemberOp::kWrite, offset, length, const_cast<uint8_t*>(buf)});  // only read
  fanout->fua = fua;
  StartModifying(fanout, offset, length);
}

void Volume::Flush(Done done) {
  auto fanout = MakeFanout(std::move(done), MemberOp::kFlush, 0, 0);
  fanout->Add({MemberOp::kFlush, 0, 0, nullptr});
  fanout->Start();
}

void Volume::Trim(uint64_t offset, uint64_t length, bool fua, Done done) {
  // Only whole blocks are trimmed: TRIM is advisory, so partial blocks at the
  // edges may keep their data.
  const uint64_t start = AlignDown(offset + caps_.min_block - 1);
  const uint64_t end = AlignDown(offset + length);
  if (end <= start) return done(0);
  auto fanout = MakeFanout(std::move(done), MemberOp::kTrim, offset, length);
  fanout->Add({MemberOp::kTrim, start, end - start, nullptr});
  fanout->fua = fua;
  StartModifying(fanout, start, end - start);
}

void Volume::Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
                  Done done) {
  // Writing zeros, or merging partial blocks, is exactly the slow path a
  // client asking for fast zeroing refuses.
  if (fast_only && (!caps_.can_fast_zero || !Aligned(offset, length))) return done(ENOTSUP);
  if (!Aligned(offset, length))
    return MergeEdges(MemberOp::kZero, offset, length, nullptr, fua, may_trim, std::move(done));
  auto fanout = MakeFanout(std::move(done), MemberOp::kZero, offset, length);
  fanout->Add({MemberOp::kZero, offset, length, nullptr});
  fanout->fua = fua;
  fanout->may_trim = may_trim;
  fanout->fast_zero = fast_only;
  StartModifying(fanout, offset, length);
}

void Volume::Cache(uint64_t offset, uint64_t length, Done done) {
  // A hint: widened to whole blocks.
  const uint64_t start = AlignDown(offset);
  const uint64_t end = std::min(AlignDown(offset + length + caps_.min_block - 1), size());
  auto fanout = MakeFanout(std::move(done), MemberOp::kCache, offset, length);
  fanout->Add({MemberOp::kCache, start, end - start, nullptr});
  fanout->Start();
}

void Volume::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  // Asked of whole blocks; at most kMaxNoPayloadPiece bytes, so one member
  // I/O per member, and kMaxStatusExtents chunks, so a bounded reply.
  auto fanout = MakePooled<StatusFanout>(*this, offset, length, std::move(done));
  fanout->start = AlignDown(offset);
  const uint64_t end = std::min(AlignDown(offset + length + caps_.min_block - 1), size());
  const uint64_t mapped =
      layout_->AppendMapPrefix(fanout->start, std::min(end - fanout->start, kMaxNoPayloadPiece),
                               kMaxStatusExtents, fanout->chunks);
  fanout->Add({MemberOp::kBlockStatus, fanout->start, mapped, nullptr});
  fanout->Start();
}

}  // namespace dst::volume
