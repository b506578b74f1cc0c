// Redundant layouts (mirror, raid10): which set of copies each member belongs to, and the layout
// of the volume over those sets. Member i is copy i % K of set i / K (md's "near" layout), where K
// is the copy count; a mirror is the one-set case. Every copy of a set holds the same bytes at the
// same member offsets, so a set behaves as one member whose size is its smallest copy's.
//
// The volume maps onto sets with an ordinary Layout: linear over the one set of a mirror, stripe
// over the sets of a raid10 (MakeSetLayout). Its "members" are set numbers, and each set presents
// its K copies as one member to it, so there is no address arithmetic here beyond the set of a
// member.
//
// Contract: MakeSetGeometry accepts exactly the copy counts a volume may have and otherwise
// returns EINVAL naming the rule broken; a SetGeometry it made is consistent (members a positive
// multiple of copies, copies >= 2). MakeSetLayout refuses what MakeLayout would for the sets.
//
// Threading: plain values and pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "aggregator/volume/layout.h"
#include "common/status.h"

namespace dst::volume {

// The fewest copies a redundant volume keeps: one copy is no redundancy.
inline constexpr uint32_t kMinCopies = 2;

// True for the layouts that keep copies (kMirror, kRaid10).
bool IsRedundant(LayoutKind kind);

struct SetGeometry {
  LayoutKind kind = LayoutKind::kMirror;  // kMirror or kRaid10
  uint32_t members = 0;                   // member count, copies x sets
  uint32_t copies = 0;                    // K, at least kMinCopies

  uint32_t sets() const { return members / copies; }
  uint32_t SetOf(uint32_t member) const { return member / copies; }
  uint32_t CopyOf(uint32_t member) const { return member % copies; }
  uint32_t MemberOf(uint32_t set, uint32_t copy) const { return set * copies + copy; }
  // How the volume lies over the sets: kLinear for a mirror (one set), kStripe for raid10.
  LayoutKind set_layout() const;

  bool operator==(const SetGeometry&) const = default;
};

// Checks the copy count against the layout and the member count: K >= 2; a mirror has exactly K
// members (one set); a raid10 has a whole number of sets, at least two (one set is a mirror).
Status MakeSetGeometry(LayoutKind kind, uint32_t members, uint32_t copies, SetGeometry* out);

// The data size of each set: the smallest of its copies' sizes. `member_sizes` has one entry per
// member, in member order.
std::vector<uint64_t> SetSizes(const SetGeometry& geometry, std::span<const uint64_t> member_sizes);

// The layout of the volume over the sets (set_layout() over SetSizes()); its size() is the
// volume's size: a mirror's is its set's size, a raid10's is sets x the smallest set size rounded
// down to a chunk. `chunk_size` applies to raid10 only. EINVAL with MakeLayout's message, in which
// "member" means a set, or when member_sizes does not have one size per member.
Status MakeSetLayout(const SetGeometry& geometry, std::span<const uint64_t> member_sizes,
                     uint64_t chunk_size, std::unique_ptr<Layout>* out);

}  // namespace dst::volume
