// A copy of a mirror or raid10 volume whose member comes back while the volume
// serves (docs/redundancy.md, "A member comes back"): which slots may take a
// member back, whether the member is accepted (the rules assembly applies to a
// stale member at start), and then the same catch-up as Open() gives a stale
// copy present at start (checksummed_catch_up.cc).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/assembly.h"  // FormatUuid
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/redundant_assembly.h"
#include "aggregator/integrity/redundant_view.h"
#include "aggregator/integrity/resync_job.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// The states of a slot that is out and may have its member back: not failed (the operator's
// word: it stays out until removed and replaced), not spare (it holds no copy), not active
// (a demotion not written yet).
bool MayReturn(MemberState state) {
  return state == MemberState::kStale || state == MemberState::kMissing ||
         state == MemberState::kResyncing || state == MemberState::kRebuilding;
}

}  // namespace

std::string ChecksummedVolume::SlotBusy(uint32_t slot) const {
  if (std::string replacing = Replacing(slot); !replacing.empty()) return replacing;
  const uint32_t k = copies_per_set();
  const volume::CopyRole role = sets_[slot / k]->role(slot % k);
  const MemberState state = view_.member_states[slot];
  if (role != volume::CopyRole::kOut)
    return std::string("it is ") + volume::CopyRoleName(role) + " (" +
           std::string(MemberStateName(state)) + ")";
  if (returning_[slot]) return "a member is already coming to it";
  if (reserved_[slot]) return "a new member is being added to it (member add)";
  const bool demoting = undurable_demotions_[slot] ||
                        std::any_of(pending_demotions_.begin(), pending_demotions_.end(),
                                    [slot](const PendingDemotion& d) { return d.slot == slot; });
  if (demoting || state == MemberState::kActive) return "its demotion is not durable yet";
  const bool catching_up =
      std::any_of(catch_ups_.begin(), catch_ups_.end(),
                  [slot](const PendingCatchUp& c) { return c.slot == slot; }) ||
      jobs_.Any([slot](const BackgroundJob& job) {
        const auto* resync = dynamic_cast<const ResyncJob*>(&job);
        return resync != nullptr && resync->slot() == slot;
      });
  if (catching_up) return "its last resync or rebuild is still ending";
  return {};
}

std::string ChecksummedVolume::NotReturnable(uint32_t slot) const {
  if (std::string busy = SlotBusy(slot); !busy.empty()) return busy;
  const MemberState state = view_.member_states[slot];
  if (state == MemberState::kFailed)
    return "it is failed: it stays out until removed (member remove) and replaced";
  if (!MayReturn(state)) return "it is " + std::string(MemberStateName(state));
  return {};
}

Status ChecksummedVolume::CheckCopyOf(uint32_t slot, const volume::MemberTarget& target,
                                      const Superblock& its, const std::string& who) const {
  const uint32_t k = copies_per_set();
  if (its.version != kFormatVersion2 || its.volume_uuid != view_.volume_uuid)
    return Status::Invalid(who + "it holds another volume (" + FormatUuid(its.volume_uuid) +
                           ", format version " + std::to_string(its.version) + ")");
  if (its.member_index != slot)
    return Status::Invalid(who + "it holds slot " + std::to_string(its.member_index));
  if (its.key_id != view_.key_id) return Status::Invalid(who + "its checksum key differs");
  if (!SameAreas(its.geometry, geometries_[slot / k]))
    return Status::Invalid(who + "its areas differ from the other copies of set " +
                           std::to_string(slot / k));
  if (target.capabilities().size != its.geometry.member_size)
    return Status::Invalid(who + "it has " + FormatSize(target.capabilities().size) +
                           " but was formatted with " + FormatSize(its.geometry.member_size));
  return Status::Ok();
}

Status ChecksummedVolume::InstallCopy(uint32_t slot, volume::MemberTarget* target,
                                      const Superblock& its) {
  const uint32_t k = copies_per_set();
  if (Status s = sets_[slot / k]->SetTarget(slot % k, target); !s.ok())
    return s.Wrap(SlotName(slot) + " of " + name());
  // The previous target (an abandoned member) is the caller's to keep; it gets nothing more.
  copies_[slot] = target;
  superblocks_[slot] = its;  // its identity and size, for the superblock updates it now gets
  returning_[slot] = true;
  return Status::Ok();
}

std::function<void(int err)> ChecksummedVolume::CatchUpAnswer(uint32_t slot, std::string what,
                                                              std::function<void(Status)> done) {
  return [this, alive = lifetime_.Watch(), slot, what = std::move(what),
          done = std::move(done)](int err) {
    if (alive.expired()) return done(Status::Error(EIO, "the volume is gone"));
    returning_[slot] = false;
    if (err == 0) return done(Status::Ok());
    const std::string why = err == ESHUTDOWN ? "the volume is stopping"
                            : err == EROFS   ? "the volume is fenced by a newer owner"
                                             : std::strerror(err);
    done(Status::Error(EIO, SlotName(slot) + " of " + name() + ": " + copies_[slot]->name() + " " +
                                what + " but stays out: " + why));
  };
}

std::vector<uint32_t> ChecksummedVolume::ReturnableSlots() const {
  std::vector<uint32_t> slots;
  if (!redundant() || !open_ || closing_ || superseded_) return slots;
  for (uint32_t slot = 0; slot < copies_.size(); ++slot)
    if (NotReturnable(slot).empty()) slots.push_back(slot);
  return slots;
}

Status ChecksummedVolume::DecideReturn(uint32_t slot, const volume::MemberTarget& target,
                                       const Superblock& its, PendingCatchUp* catch_up) const {
  const uint32_t k = copies_per_set();
  const std::string who = SlotName(slot) + " of " + name() + ": " + target.name() + " refused: ";
  DST_RETURN_IF_ERROR(CheckCopyOf(slot, target, its, who));
  // The view stands for the freshest superblock; one that is not older than it was written by
  // someone else since (another aggregator) and is not this volume's to judge.
  if (its.ownership_epoch > view_.ownership_epoch ||
      (its.ownership_epoch == view_.ownership_epoch && its.event >= view_.event))
    return Status::Invalid(
        who + "its superblock (ownership epoch " + std::to_string(its.ownership_epoch) +
        ", event " + std::to_string(its.event) +
        ") is not older than the volume's (ownership epoch " +
        std::to_string(view_.ownership_epoch) + ", event " + std::to_string(view_.event) + ")");
  // Assembly's decision on [the view, as one of the set's current copies; the member].
  redundancy::MemberView view = MemberViewOf(view_);
  const std::vector<uint32_t> current = CurrentCopies(slot / k);
  view.slot = (slot / k) * k + (current.empty() ? (slot % k + 1) % k : current.front());
  view.member_uuid = view_.slot_members[view.slot];
  const redundancy::MemberView views[] = {view, MemberViewOf(its)};
  redundancy::AssemblyOptions options;
  options.allow_degraded = true;  // the other slots are not the question
  const redundancy::AssemblyDecision decision = redundancy::DecideAssembly(views, options);
  if (decision.slots.size() <= slot) return Status::Invalid(who + decision.status.message());
  const redundancy::SlotVerdict& verdict = decision.slots[slot];
  switch (verdict.role) {
    case redundancy::SlotRole::kStaleResync:
      *catch_up = {slot, false, verdict.reason};
      return Status::Ok();
    case redundancy::SlotRole::kStaleRebuild:
    case redundancy::SlotRole::kRebuilding:
      *catch_up = {slot, true, verdict.reason};
      return Status::Ok();
    default:
      return Status::Invalid(who + verdict.reason);
  }
}

void ChecksummedVolume::ReattachCopy(uint32_t slot, volume::MemberTarget* target,
                                     const Superblock& its, std::function<void(Status)> done) {
  // Answers come from the event loop, never from inside this call (as the member commands'
  // `durable` and every member I/O do).
  const auto answer = [this, &done](Status status) {
    asio::post(io_, [done = std::move(done), status = std::move(status)] { done(status); });
  };
  if (Status s = CheckMemberCommand(slot); !s.ok()) return answer(std::move(s));
  if (const std::string why = NotReturnable(slot); !why.empty())
    return answer(Status::Error(
        EBUSY, SlotName(slot) + " of " + name() + " cannot take its member back: " + why));
  if (target == nullptr) return answer(Status::Invalid(SlotName(slot) + ": no member given"));
  PendingCatchUp catch_up;
  if (Status s = DecideReturn(slot, *target, its, &catch_up); !s.ok()) return answer(std::move(s));
  if (Status s = InstallCopy(slot, target, its); !s.ok()) return answer(std::move(s));
  LOG_INFO("volume %s: %s %s is back: %s", name().c_str(), SlotName(slot).c_str(),
           target->name().c_str(), catch_up.reason.c_str());
  StartCatchUp(catch_up, CatchUpAnswer(slot, "came back", std::move(done)));
}

}  // namespace dst::integrity
