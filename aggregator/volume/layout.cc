#include "aggregator/volume/layout.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "common/units.h"

namespace dst::volume {

namespace {

// NBD sizes and offsets are signed 64-bit in most implementations (and
// ParseSize caps there), so a volume must stay below 2^63.
constexpr uint64_t kMaxVolumeSize = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

Status ValidateMemberCount(const std::vector<uint64_t>& member_sizes) {
  if (member_sizes.empty()) return Status::Invalid("volume has no members");
  // MemberExtent::member is 32-bit.
  if (member_sizes.size() > std::numeric_limits<uint32_t>::max()) {
    return Status::Invalid("volume has " + std::to_string(member_sizes.size()) +
                           " members, more than 4294967295");
  }
  return Status::Ok();
}

Status ValidateLinear(const std::vector<uint64_t>& member_sizes) {
  uint64_t total = 0;
  for (size_t i = 0; i < member_sizes.size(); ++i) {
    if (member_sizes[i] > kMaxVolumeSize - total) {
      return Status::Invalid("linear volume size overflows 2^63 bytes at member " +
                             std::to_string(i) + " (" + FormatSize(member_sizes[i]) + ")");
    }
    total += member_sizes[i];
  }
  if (total == 0) return Status::Invalid("linear volume has size 0: every member is empty");
  return Status::Ok();
}

Status ValidateStripe(const std::vector<uint64_t>& member_sizes, uint64_t chunk_size) {
  DST_RETURN_IF_ERROR(ValidateChunkSize(chunk_size));
  for (size_t i = 0; i < member_sizes.size(); ++i) {
    if (member_sizes[i] < chunk_size) {
      return Status::Invalid("member " + std::to_string(i) + " (" + FormatSize(member_sizes[i]) +
                             ") is smaller than one chunk (" + FormatSize(chunk_size) + ")");
    }
  }
  const uint64_t smallest = *std::min_element(member_sizes.begin(), member_sizes.end());
  const uint64_t usable = smallest & ~(chunk_size - 1);
  if (usable > kMaxVolumeSize / member_sizes.size()) {
    return Status::Invalid("stripe volume of " + std::to_string(member_sizes.size()) + " x " +
                           FormatSize(usable) + " overflows 2^63 bytes");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateChunkSize(uint64_t chunk_size) {
  const std::string name = "chunk size " + FormatSize(chunk_size);
  if (!std::has_single_bit(chunk_size)) return Status::Invalid(name + " is not a power of two");
  if (chunk_size < kMinChunkSize) {
    return Status::Invalid(name + " is smaller than the minimum (" + FormatSize(kMinChunkSize) +
                           ")");
  }
  if (chunk_size > kMaxChunkSize) {
    return Status::Invalid(name + " is larger than the maximum (" + FormatSize(kMaxChunkSize) +
                           ")");
  }
  return Status::Ok();
}

std::string_view LayoutKindName(LayoutKind kind) {
  switch (kind) {
    case LayoutKind::kLinear:
      return "linear";
    case LayoutKind::kStripe:
      return "stripe";
    case LayoutKind::kMirror:
      return "mirror";
    case LayoutKind::kRaid10:
      return "raid10";
  }
  return "unknown";
}

Status ParseLayoutKind(std::string_view text, LayoutKind* out) {
  for (LayoutKind kind :
       {LayoutKind::kLinear, LayoutKind::kStripe, LayoutKind::kMirror, LayoutKind::kRaid10}) {
    if (text == LayoutKindName(kind)) {
      *out = kind;
      return Status::Ok();
    }
  }
  return Status::Invalid("unknown layout '" + std::string(text) +
                         "' (expected linear, stripe, mirror or raid10)");
}

std::vector<MemberExtent> Layout::Map(uint64_t offset, uint64_t length) const {
  std::vector<MemberExtent> out;
  AppendMap(offset, length, out);
  return out;
}

void Layout::AppendMap(uint64_t offset, uint64_t length, std::vector<MemberExtent>& out) const {
  AppendMapPrefix(offset, length, std::numeric_limits<size_t>::max(), out);
}

uint64_t Layout::AppendMapPrefix(uint64_t offset, uint64_t length, size_t max_extents,
                                 std::vector<MemberExtent>& out) const {
  // Written so that offset + length cannot overflow, whatever the caller sent.
  const uint64_t end = size();
  if (length == 0 || offset >= end || max_extents == 0) return 0;
  return AppendInRange(offset, std::min(length, end - offset), max_extents, out);
}

MemberExtent Layout::FirstExtent(uint64_t offset, uint64_t length) const {
  const uint64_t end = size();
  if (length == 0 || offset >= end) return {0, 0, 0, offset};
  return FirstInRange(offset, std::min(length, end - offset));
}

void Layout::AppendRuns(uint64_t offset, uint64_t length, std::vector<MemberExtent>& out) const {
  // Mapped a batch of extents at a time, so that a range of many chunks
  // never needs a vector of them all.
  constexpr size_t kBatch = 256;
  std::vector<size_t> open_run(member_count(), SIZE_MAX);  // index in `out`, per member
  std::vector<MemberExtent> batch;
  while (length > 0) {
    batch.clear();
    const uint64_t mapped = AppendMapPrefix(offset, length, kBatch, batch);
    if (mapped == 0) return;  // past the end
    for (const MemberExtent& e : batch) {
      size_t& run = open_run[e.member];
      if (run != SIZE_MAX && out[run].member_offset + out[run].length == e.member_offset) {
        out[run].length += e.length;
        continue;
      }
      run = out.size();
      out.push_back(e);
    }
    offset += mapped;
    length -= mapped;
  }
}

LinearLayout::LinearLayout(std::vector<uint64_t> member_sizes)
    : member_sizes_(std::move(member_sizes)) {
  for (size_t i = 0; i < member_sizes_.size(); ++i) {
    member_starts_.push_back(size_);
    if (member_sizes_[i] == 0) continue;
    segments_.push_back({size_, member_sizes_[i], static_cast<uint32_t>(i)});
    size_ += member_sizes_[i];
  }
}

uint32_t LinearLayout::member_count() const {
  return static_cast<uint32_t>(member_sizes_.size());
}

uint64_t LinearLayout::member_usable_size(uint32_t member) const {
  return member < member_sizes_.size() ? member_sizes_[member] : 0;
}

uint64_t LinearLayout::VolumeOffset(uint32_t member, uint64_t member_offset) const {
  return member < member_starts_.size() ? member_starts_[member] + member_offset : 0;
}

MemberExtent LinearLayout::FirstInRange(uint64_t offset, uint64_t length) const {
  // The last segment starting at or before `offset`, as in AppendInRange.
  const auto segment =
      std::upper_bound(segments_.begin(), segments_.end(), offset,
                       [](uint64_t value, const Segment& s) { return value < s.volume_offset; }) -
      1;
  const uint64_t within = offset - segment->volume_offset;
  return {segment->member, within, std::min(length, segment->length - within), offset};
}

uint64_t LinearLayout::AppendInRange(uint64_t offset, uint64_t length, size_t max_extents,
                                     std::vector<MemberExtent>& out) const {
  // The last segment starting at or before `offset`; one exists because the
  // first starts at 0 and offset < size().
  auto segment =
      std::upper_bound(segments_.begin(), segments_.end(), offset,
                       [](uint64_t value, const Segment& s) { return value < s.volume_offset; });
  --segment;
  uint64_t mapped = 0;
  for (size_t n = 0; n < max_extents && mapped < length; ++n, ++segment) {
    const uint64_t within = offset + mapped - segment->volume_offset;
    const uint64_t piece = std::min(length - mapped, segment->length - within);
    out.push_back({segment->member, within, piece, offset + mapped});
    mapped += piece;
  }
  return mapped;
}

StripeLayout::StripeLayout(std::vector<uint64_t> member_sizes, uint64_t chunk_size)
    : member_count_(static_cast<uint32_t>(member_sizes.size())),
      chunk_size_(chunk_size),
      chunk_shift_(std::countr_zero(chunk_size)) {
  if (member_sizes.empty()) return;
  const uint64_t smallest = *std::min_element(member_sizes.begin(), member_sizes.end());
  usable_per_member_ = smallest & ~(chunk_size_ - 1);
  size_ = usable_per_member_ * member_count_;
}

uint64_t StripeLayout::member_usable_size(uint32_t member) const {
  return member < member_count_ ? usable_per_member_ : 0;
}

uint64_t StripeLayout::VolumeOffset(uint32_t member, uint64_t member_offset) const {
  const uint64_t row = member_offset >> chunk_shift_;
  const uint64_t chunk = row * member_count_ + member;
  return (chunk << chunk_shift_) + (member_offset & (chunk_size_ - 1));
}

MemberExtent StripeLayout::FirstInRange(uint64_t offset, uint64_t length) const {
  if (member_count_ == 1) return {0, offset, length, offset};
  const uint64_t chunk = offset >> chunk_shift_;
  const uint64_t within = offset & (chunk_size_ - 1);
  return {static_cast<uint32_t>(chunk % member_count_),
          ((chunk / member_count_) << chunk_shift_) + within,
          std::min(length, chunk_size_ - within), offset};
}

uint64_t StripeLayout::AppendInRange(uint64_t offset, uint64_t length, size_t max_extents,
                                     std::vector<MemberExtent>& out) const {
  // One member is the identity mapping: the whole request is one extent.
  if (member_count_ == 1) {
    out.push_back({0, offset, length, offset});
    return length;
  }
  const uint64_t chunk = offset >> chunk_shift_;
  uint32_t member = static_cast<uint32_t>(chunk % member_count_);
  uint64_t row_offset = (chunk / member_count_) << chunk_shift_;
  uint64_t within = offset & (chunk_size_ - 1);
  // Walk chunk by chunk, stepping member and row instead of dividing again.
  uint64_t mapped = 0;
  for (size_t n = 0; n < max_extents && mapped < length; ++n) {
    const uint64_t piece = std::min(length - mapped, chunk_size_ - within);
    out.push_back({member, row_offset + within, piece, offset + mapped});
    mapped += piece;
    within = 0;
    if (++member == member_count_) {
      member = 0;
      row_offset += chunk_size_;
    }
  }
  return mapped;
}

Status MakeLayout(LayoutKind kind, std::vector<uint64_t> member_sizes, uint64_t chunk_size,
                  std::unique_ptr<Layout>* out) {
  DST_RETURN_IF_ERROR(ValidateMemberCount(member_sizes));
  switch (kind) {
    case LayoutKind::kLinear:
      DST_RETURN_IF_ERROR(ValidateLinear(member_sizes));
      *out = std::make_unique<LinearLayout>(std::move(member_sizes));
      return Status::Ok();
    case LayoutKind::kStripe:
      DST_RETURN_IF_ERROR(ValidateStripe(member_sizes, chunk_size));
      *out = std::make_unique<StripeLayout>(std::move(member_sizes), chunk_size);
      return Status::Ok();
    case LayoutKind::kMirror:
    case LayoutKind::kRaid10:
      // Raw members have no superblocks to say which copies are current.
      return Status::Invalid("a " + std::string(LayoutKindName(kind)) +
                             " volume keeps copies on sets of members and needs the member "
                             "format: it cannot be laid out over raw members");
  }
  return Status::Invalid("unknown layout kind " + std::to_string(static_cast<int>(kind)));
}

}  // namespace dst::volume
