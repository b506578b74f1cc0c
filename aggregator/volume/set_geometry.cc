#include "aggregator/volume/set_geometry.h"

#include <algorithm>
#include <string>

#include "common/units.h"

namespace dst::volume {

namespace {

std::string Members(uint32_t n) {
  return std::to_string(n) + (n == 1 ? " member" : " members");
}

Status CheckMirror(uint32_t members, uint32_t copies) {
  if (members == copies) return Status::Ok();
  return Status::Invalid("a mirror of " + std::to_string(copies) + " copies has exactly " +
                         Members(copies) + ", not " + std::to_string(members));
}

Status CheckRaid10(uint32_t members, uint32_t copies) {
  if (members % copies != 0) {
    return Status::Invalid("raid10 with " + std::to_string(copies) +
                           " copies needs a multiple of " + Members(copies) + ", not " +
                           std::to_string(members));
  }
  if (members == copies) {
    return Status::Invalid("raid10 with " + Members(members) + " and " + std::to_string(copies) +
                           " copies is a single set: use layout mirror");
  }
  if (members / copies < 2) {
    return Status::Invalid("raid10 with " + std::to_string(copies) + " copies needs at least " +
                           Members(2 * copies) + " (two sets), not " + std::to_string(members));
  }
  return Status::Ok();
}

// A set smaller than one chunk holds no chunk at all; named as a set and its members.
Status CheckSetsHoldAChunk(const SetGeometry& g, const std::vector<uint64_t>& set_sizes,
                           uint64_t chunk_size) {
  DST_RETURN_IF_ERROR(ValidateChunkSize(chunk_size));
  for (uint32_t s = 0; s < set_sizes.size(); ++s) {
    if (set_sizes[s] >= chunk_size) continue;
    return Status::Invalid(
        "set " + std::to_string(s) + " (members " + std::to_string(g.MemberOf(s, 0)) + " to " +
        std::to_string(g.MemberOf(s, g.copies - 1)) + ", " + FormatSize(set_sizes[s]) +
        ") is smaller than one chunk (" + FormatSize(chunk_size) + ")");
  }
  return Status::Ok();
}

}  // namespace

bool IsRedundant(LayoutKind kind) {
  return kind == LayoutKind::kMirror || kind == LayoutKind::kRaid10;
}

LayoutKind SetGeometry::set_layout() const {
  return kind == LayoutKind::kRaid10 ? LayoutKind::kStripe : LayoutKind::kLinear;
}

Status MakeSetGeometry(LayoutKind kind, uint32_t members, uint32_t copies, SetGeometry* out) {
  if (!IsRedundant(kind)) {
    return Status::Invalid("layout " + std::string(LayoutKindName(kind)) + " keeps no copies");
  }
  if (copies < kMinCopies) {
    return Status::Invalid("a " + std::string(LayoutKindName(kind)) + " volume keeps at least " +
                           std::to_string(kMinCopies) + " copies, not " + std::to_string(copies));
  }
  DST_RETURN_IF_ERROR(kind == LayoutKind::kMirror ? CheckMirror(members, copies)
                                                  : CheckRaid10(members, copies));
  *out = {kind, members, copies};
  return Status::Ok();
}

std::vector<uint64_t> SetSizes(const SetGeometry& geometry,
                               std::span<const uint64_t> member_sizes) {
  std::vector<uint64_t> sizes(geometry.sets(), UINT64_MAX);
  for (uint32_t m = 0; m < member_sizes.size() && m < geometry.members; ++m) {
    uint64_t& set = sizes[geometry.SetOf(m)];
    set = std::min(set, member_sizes[m]);
  }
  return sizes;
}

Status MakeSetLayout(const SetGeometry& geometry, std::span<const uint64_t> member_sizes,
                     uint64_t chunk_size, std::unique_ptr<Layout>* out) {
  if (member_sizes.size() != geometry.members) {
    return Status::Invalid(std::to_string(member_sizes.size()) + " member sizes for a " +
                           std::string(LayoutKindName(geometry.kind)) + " of " +
                           Members(geometry.members));
  }
  std::vector<uint64_t> set_sizes = SetSizes(geometry, member_sizes);
  if (geometry.set_layout() == LayoutKind::kStripe)
    DST_RETURN_IF_ERROR(CheckSetsHoldAChunk(geometry, set_sizes, chunk_size));
  return MakeLayout(geometry.set_layout(), std::move(set_sizes), chunk_size, out);
}

}  // namespace dst::volume
