// A new member for a slot of a mirror or raid10 volume that is out (`member add`;
// docs/redundancy.md, "Member commands"): which slot it fills, the superblock it is formatted
// with, and the slot taking it: its owner UUID becomes the new member's, and it is rebuilt in
// full through the catch-up a copy that comes back gets (checksummed_catch_up.cc).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/assembly.h"  // NewUuid
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/resync_job.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

constexpr char kReason[] = "new member (member add)";

// Out of the volume's copies and not spare: a slot a new member may fill.
bool Fillable(MemberState state) {
  return state == MemberState::kStale || state == MemberState::kFailed ||
         state == MemberState::kMissing || state == MemberState::kResyncing ||
         state == MemberState::kRebuilding;
}

}  // namespace

std::string ChecksummedVolume::NotFillable(uint32_t slot) const {
  if (std::string busy = SlotBusy(slot); !busy.empty()) return busy;
  const MemberState state = view_.member_states[slot];
  if (!Fillable(state)) return "it is " + std::string(MemberStateName(state));
  return {};
}

Status ChecksummedVolume::SlotToFill(std::optional<uint32_t> slot, uint32_t* out) const {
  if (slot) {
    DST_RETURN_IF_ERROR(CheckMemberCommand(*slot));
    if (const std::string why = NotFillable(*slot); !why.empty())
      return Status::Error(EBUSY,
                           SlotName(*slot) + " of " + name() + " cannot take a new member: " + why);
    *out = *slot;
    return Status::Ok();
  }
  DST_RETURN_IF_ERROR(CheckMemberCommand(0));
  for (uint32_t s = 0; s < copies_.size(); ++s)
    if (NotFillable(s).empty()) {
      *out = s;
      return Status::Ok();
    }
  return Status::Error(
      EBUSY, "volume " + name() + " has no slot to fill: every slot is current or catching up");
}

Status ChecksummedVolume::ReserveSlot(std::optional<uint32_t> slot, uint32_t* out) {
  DST_RETURN_IF_ERROR(SlotToFill(slot, out));
  reserved_[*out] = true;
  return Status::Ok();
}

void ChecksummedVolume::ReleaseSlot(uint32_t slot) {
  if (slot < reserved_.size()) reserved_[slot] = false;
}

Status ChecksummedVolume::NewMemberSuperblock(uint32_t slot, const std::string& uri,
                                              uint64_t export_size, Superblock* out) const {
  DST_RETURN_IF_ERROR(CheckMemberCommand(slot));
  const uint64_t size = superblocks_[slot].geometry.member_size;
  if (export_size != size)
    return Status::Invalid(uri + " has " + FormatSize(export_size) + " (" +
                           std::to_string(export_size) + " bytes); " + SlotName(slot) + " of " +
                           name() + " needs exactly " + FormatSize(size) + " (" +
                           std::to_string(size) + " bytes), the size of its member");
  Superblock sb = CopySuperblock(view_, slot);
  sb.geometry = geometries_[slot / copies_per_set()];
  sb.geometry.member_size = size;
  sb.member_index = slot;
  sb.member_uuid = NewUuid();
  // The slot as AdoptMember's update will record it: owned by the new member, rebuilding.
  ApplySlotEdit(
      SlotEdit{.slot = slot, .flags = std::nullopt, .remove = false, .owner = sb.member_uuid}, sb);
  DST_RETURN_IF_ERROR(ValidateSuperblock(sb).Wrap("the new member's superblock"));
  *out = std::move(sb);
  return Status::Ok();
}

Status ChecksummedVolume::CheckNewMember(uint32_t slot, const volume::MemberTarget& target,
                                         const Superblock& its) const {
  const std::string who = SlotName(slot) + " of " + name() + ": " + target.name() + " refused: ";
  DST_RETURN_IF_ERROR(CheckCopyOf(slot, target, its, who));
  if (its.slot_members[slot] != its.member_uuid ||
      its.member_states[slot] != MemberState::kRebuilding)
    return Status::Invalid(who + "it was not formatted as a new member of the slot");
  for (const Uuid& owner : view_.slot_members)
    if (owner == its.member_uuid)
      return Status::Invalid(who + "its member UUID " + FormatUuid(owner) +
                             " already owns a slot: it is not new");
  return Status::Ok();
}

void ChecksummedVolume::AdoptMember(uint32_t slot, volume::MemberTarget* target,
                                    const Superblock& its, std::function<void(Status)> done) {
  // Answers come from the event loop, never from inside this call.
  const auto answer = [this, &done](Status status) {
    asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  ReleaseSlot(slot);  // the caller's hold, if any, ends here
  uint32_t filled = 0;
  if (Status s = SlotToFill(slot, &filled); !s.ok()) return answer(std::move(s));
  if (target == nullptr) return answer(Status::Invalid(SlotName(slot) + ": no member given"));
  if (Status s = CheckNewMember(slot, *target, its); !s.ok()) return answer(std::move(s));
  const std::string was(MemberStateName(view_.member_states[slot]));
  if (Status s = InstallCopy(slot, target, its); !s.ok())
    return answer(Status::Invalid(s.message()));
  LOG_INFO("volume %s: %s (%s) takes the new member %s (member %s)", name().c_str(),
           SlotName(slot).c_str(), was.c_str(), target->name().c_str(),
           FormatUuid(its.member_uuid).c_str());
  // The owner first, durably: a slot recorded rebuilding from 0 under the new owner before any
  // block is copied, so that a restart rebuilds it in full and refuses the old export.
  PendingUpdate update;
  update.slot_edit =
      SlotEdit{.slot = slot, .flags = std::nullopt, .remove = false, .owner = its.member_uuid};
  auto finish = CatchUpAnswer(slot, "was added", std::move(done));
  update.done = [this, alive = lifetime_.Watch(), slot,
                 finish = std::move(finish)](int err) mutable {
    if (alive.expired()) return finish(EIO);
    if (err != 0) {
      LOG_ERROR("volume %s: %s: recording its new member failed: %s", name().c_str(),
                SlotName(slot).c_str(), std::strerror(err));
      return finish(err);
    }
    StartCatchUp({slot, true, kReason}, std::move(finish));
  };
  QueueUpdate(std::move(update));
}

}  // namespace dst::integrity
