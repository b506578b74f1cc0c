// The operator's member commands on a running mirror or raid10 volume: fail a
// current copy, set or clear its write-mostly flag, remove a copy that is out.
// Each acts on the running sets at once and reaches the superblocks through
// the volume's one-at-a-time updates (checksummed_copies.cc). See
// docs/redundancy.md, "Member commands".
#include <cerrno>
#include <string>
#include <utility>

#include "aggregator/integrity/assembly.h"  // NewUuid
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/resync_job.h"
#include "common/log.h"

namespace dst::integrity {

namespace {

constexpr char kFailedCause[] = "failed by the operator";

}  // namespace

std::string SlotName(uint32_t slot) {
  return "slot " + std::to_string(slot);
}

Status ChecksummedVolume::CheckMemberCommand(uint32_t slot) const {
  if (!redundant())
    return Status::Invalid("volume " + name() + " is " +
                           std::string(volume::LayoutKindName(view_.layout)) +
                           ": member commands need a mirror or raid10 volume");
  if (slot >= copies_.size())
    return Status::Error(ERANGE, "volume " + name() + " has no " + SlotName(slot) +
                                     " (slots 0 to " + std::to_string(copies_.size() - 1) + ")");
  if (superseded_) return Status::Error(EROFS, "volume " + name() + " is fenced by a newer owner");
  if (!open_ || closing_) return Status::Error(ESHUTDOWN, "volume " + name() + " is not open");
  return Status::Ok();
}

Status ChecksummedVolume::FailMember(uint32_t slot, Done durable) {
  DST_RETURN_IF_ERROR(CheckMemberCommand(slot));
  const uint32_t k = copies_per_set();
  const volume::CopyRole role = sets_[slot / k]->role(slot % k);
  if (role == volume::CopyRole::kOut)
    return Status::Invalid(SlotName(slot) + " of " + name() + " is not current (" +
                           std::string(MemberStateName(view_.member_states[slot])) +
                           "): only a current or catching-up copy can be failed");
  // A catching-up copy is not counted: failing it stops its resync or rebuild (at its next step).
  if (role == volume::CopyRole::kCurrent && LastCurrent(slot))
    return Status::Error(EBUSY, SlotName(slot) + " is the last current copy of set " +
                                    std::to_string(slot / k) + " of " + name() +
                                    ": failing it would leave the set without its data");
  LOG_WARNING("volume %s: %s %s: %s", name().c_str(), SlotName(slot).c_str(),
              copies_[slot] != nullptr ? copies_[slot]->name().c_str() : "(missing)", kFailedCause);
  if (role == volume::CopyRole::kCatchingUp)
    jobs_.Cancel(
        [slot](const BackgroundJob& job) {
          const auto* resync = dynamic_cast<const ResyncJob*>(&job);
          return resync != nullptr && resync->slot() == slot && !resync->replace();
        },
        kFailedCause);
  DemoteSlot(
      slot, kFailedCause,
      [durable = std::move(durable)](int err) {
        if (durable) durable(err);
      },
      MemberState::kFailed);
  return Status::Ok();
}

Status ChecksummedVolume::SetWriteMostly(uint32_t slot, bool write_mostly, Done durable) {
  DST_RETURN_IF_ERROR(CheckMemberCommand(slot));
  const uint32_t k = copies_per_set();
  sets_[slot / k]->SetWriteMostly(slot % k, write_mostly);
  uint8_t flags = PendingFlags(slot);
  flags = write_mostly ? (flags | kSlotWriteMostly) : (flags & ~kSlotWriteMostly);
  PendingUpdate update;
  update.done = std::move(durable);
  update.slot_edit = SlotEdit{.slot = slot, .flags = flags, .remove = false, .owner = std::nullopt};
  QueueUpdate(std::move(update));
  LOG_INFO("volume %s: %s set %s", name().c_str(), SlotName(slot).c_str(),
           write_mostly ? "write-mostly" : "readwrite");
  return Status::Ok();
}

// Edits queue in order: each update starts from the view the one before it wrote.
uint8_t ChecksummedVolume::PendingFlags(uint32_t slot) const {
  uint8_t flags = view_.slot_flags[slot];
  for (const PendingUpdate& u : pending_updates_)
    if (u.slot_edit && u.slot_edit->slot == slot && u.slot_edit->flags) flags = *u.slot_edit->flags;
  return flags;
}

Status ChecksummedVolume::RemoveMember(uint32_t slot, Done durable) {
  DST_RETURN_IF_ERROR(CheckMemberCommand(slot));
  const uint32_t k = copies_per_set();
  const volume::CopyRole role = sets_[slot / k]->role(slot % k);
  const std::string state(MemberStateName(view_.member_states[slot]));
  if (role == volume::CopyRole::kCurrent)
    return Status::Invalid(SlotName(slot) + " of " + name() +
                           " is current: fail it first (member fail)");
  if (role == volume::CopyRole::kCatchingUp)
    return Status::Error(EBUSY, SlotName(slot) + " of " + name() + " is catching up (" + state +
                                    "): fail it first (member fail), or wait for it to finish");
  if (returning_[slot])
    return Status::Error(EBUSY, SlotName(slot) + " of " + name() +
                                    " is taking its member back: wait for it to catch up");
  if (copies_[slot] != nullptr) copies_[slot]->Abandon("removed by the operator");
  copies_[slot] = nullptr;
  PendingUpdate update;
  update.done = std::move(durable);
  update.slot_edit =
      SlotEdit{.slot = slot, .flags = std::nullopt, .remove = true, .owner = std::nullopt};
  QueueUpdate(std::move(update));
  LOG_WARNING("volume %s: %s (%s) removed by the operator: recorded missing", name().c_str(),
              SlotName(slot).c_str(), state.c_str());
  return Status::Ok();
}

void ChecksummedVolume::ApplySlotEdit(const SlotEdit& edit, Superblock& view) {
  if (edit.owner) {  // a new member, empty: rebuilt in full from the start
    view.slot_members[edit.slot] = *edit.owner;
    view.member_states[edit.slot] = MemberState::kRebuilding;
    view.slot_flags[edit.slot] = 0;
    view.cursor[edit.slot] = 0;
    if (view.stale_since[edit.slot] == 0) view.stale_since[edit.slot] = view.event;
  }
  if (edit.flags) view.slot_flags[edit.slot] = *edit.flags;  // after: a replacement keeps them
  if (!edit.remove) return;
  view.member_states[edit.slot] = MemberState::kMissing;
  view.slot_members[edit.slot] = NewUuid();  // no member holds it: the old export is refused
  view.slot_flags[edit.slot] = 0;
  view.cursor[edit.slot] = 0;
  if (view.stale_since[edit.slot] == 0) view.stale_since[edit.slot] = view.event;
}

}  // namespace dst::integrity
