#include "aggregator/integrity/redundant_view.h"

#include <algorithm>

namespace dst::integrity {

redundancy::MemberView MemberViewOf(const Superblock& sb) {
  redundancy::MemberView v;
  v.slot = sb.member_index;
  v.member_uuid = sb.member_uuid;
  v.generation = sb.generation;
  for (size_t i = 0; i < kHistoryLength && i < v.history.size(); ++i)
    v.history[i] = sb.history[i];
  v.event = sb.event;
  v.ownership_epoch = sb.ownership_epoch;
  v.map_epoch = sb.map_epoch;
  v.copies = sb.copies;
  v.member_count = sb.member_count;
  static_assert(redundancy::kMaxSlots == kMaxMembers);
  for (uint32_t s = 0; s < kMaxMembers; ++s) {
    // The codes are the same on both sides (redundant_assembly.h).
    v.slot_states[s] = static_cast<redundancy::SlotState>(sb.member_states[s]);
    v.stale_since[s] = sb.stale_since[s];
    v.slot_members[s] = sb.slot_members[s];
  }
  return v;
}

Superblock ServingView(std::span<const std::optional<Superblock>> read, uint32_t freshest,
                       const redundancy::AssemblyDecision& decision, const Uuid& new_generation) {
  Superblock view = *read[freshest];
  for (uint32_t s = 0; s < decision.slots.size() && s < kMaxMembers; ++s) {
    if (decision.slots[s].role == redundancy::SlotRole::kCurrent) continue;
    if (view.member_states[s] != MemberState::kActive) continue;
    // It stopped receiving writes no later than its own last update.
    uint64_t since = view.event;
    if (s < read.size() && read[s]) since = std::min(since, read[s]->event);
    view.member_states[s] = MemberState::kStale;
    view.stale_since[s] = since;
  }
  if (decision.new_generation) {
    for (size_t i = kHistoryLength - 1; i > 0; --i)
      view.history[i] = view.history[i - 1];
    view.history[0] = view.generation;
    view.generation = new_generation;
  }
  return view;
}

}  // namespace dst::integrity
