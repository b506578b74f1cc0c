// A member of a mirror or raid10 volume replaced while it serves (`member replace`;
// docs/redundancy.md, "Replace a member"): the new member is the set's replacement copy, written
// by every client write and rebuilt in full from the current copies while the old member keeps
// serving; when the rebuild is done the slot's copy takes the new member and one superblock update
// makes it the slot's owner, current. Until that update nothing durable names the new member but
// its own superblock, so a restart in the middle finds the old member still the slot's and refuses
// the new export (rule not-owner): the replacement starts over.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/assembly.h"  // FormatUuid
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/resync_job.h"
#include "common/log.h"

namespace dst::integrity {

std::string ChecksummedVolume::Replacing(uint32_t slot) const {
  if (!replacement_ || replacement_->slot != slot) return {};
  return "it is being replaced (member replace)";
}

std::string ChecksummedVolume::SlotMemberName(uint32_t slot) const {
  if (slot >= copies_.size()) return {};
  return copies_[slot] != nullptr ? copies_[slot]->name() : "(missing)";
}

Status ChecksummedVolume::ReserveReplacement(uint32_t slot) {
  DST_RETURN_IF_ERROR(CheckMemberCommand(slot));
  if (replacement_)
    return Status::Error(EBUSY, "volume " + name() + ": a replacement is under way (" +
                                    SlotName(replacement_->slot) + ")");
  if (jobs_.Any(ResyncJob::IsReplacement))
    return Status::Error(EBUSY, "volume " + name() + ": a replacement is under way (ending)");
  const uint32_t k = copies_per_set();
  if (sets_[slot / k]->role(slot % k) != volume::CopyRole::kCurrent)
    return Status::Invalid(SlotName(slot) + " of " + name() + " is " +
                           std::string(MemberStateName(view_.member_states[slot])) +
                           ": nothing serves from it to keep; use member add");
  replacement_ = Replacement{};
  replacement_->slot = slot;
  return Status::Ok();
}

void ChecksummedVolume::ReleaseReplacement(uint32_t slot) {
  if (replacement_ && replacement_->slot == slot &&
      replacement_->phase == Replacement::Phase::kReserved)
    replacement_.reset();
}

void ChecksummedVolume::AdoptReplacement(uint32_t slot, volume::MemberTarget* target,
                                         const Superblock& its, std::function<void(Status)> started,
                                         std::function<void(Status, bool installed)> ended) {
  // Answers come from the event loop, never from inside this call.
  const auto refuse = [this, slot, &started](Status status) {
    ReleaseReplacement(slot);
    asio::post(io_,
               [started = std::move(started), status = std::move(status)] { started(status); });
  };
  if (!replacement_ || replacement_->slot != slot ||
      replacement_->phase != Replacement::Phase::kReserved)
    return refuse(Status::Error(
        EBUSY, SlotName(slot) + " of " + name() + ": no replacement reserved for it"));
  if (Status s = CheckMemberCommand(slot); !s.ok()) return refuse(std::move(s));
  const uint32_t k = copies_per_set();
  volume::MirrorSet& set = *sets_[slot / k];
  if (set.role(slot % k) != volume::CopyRole::kCurrent)
    return refuse(Status::Error(
        EBUSY, SlotName(slot) + " of " + name() + " is no longer current: not replaced"));
  if (target == nullptr) return refuse(Status::Invalid(SlotName(slot) + ": no member given"));
  if (Status s = CheckNewMember(slot, *target, its); !s.ok()) return refuse(std::move(s));
  if (Status s = set.AttachReplacement(target); !s.ok())
    return refuse(Status::Invalid(s.message()));
  Replacement& r = *replacement_;
  r.phase = Replacement::Phase::kRebuilding;
  r.target = target;
  r.superblock = its;
  r.old_name = copies_[slot]->name();
  r.ended = std::move(ended);
  LOG_INFO("volume %s: %s: replacing %s by %s (member %s)", name().c_str(), SlotName(slot).c_str(),
           r.old_name.c_str(), target->name().c_str(), FormatUuid(its.member_uuid).c_str());
  ResyncPlan plan{
      .slot = slot,
      .full = true,
      .replace = true,
      .reason = "full: replacing " + r.old_name + " by " + target->name() + " (member replace)",
      .ranges = {{0, UINT64_MAX}}};
  AddResyncJob(std::move(plan), [started = std::move(started)](int err) {
    if (err == 0) return started(Status::Ok());
    started(
        Status::Error(EIO, std::string("its rebuild could not start: ") +
                               (err == ESHUTDOWN ? "the volume is stopping" : std::strerror(err))));
  });
}

void ChecksummedVolume::ReplacementFailed(const std::string& cause) {
  if (!replacement_ || replacement_->phase != Replacement::Phase::kRebuilding) return;
  Replacement r = std::move(*replacement_);
  replacement_.reset();
  volume::MirrorSet& set = *sets_[r.slot / copies_per_set()];
  set.SetRole(set.replacement_copy(), volume::CopyRole::kOut);
  r.target->Abandon("replacement failed: " + cause);
  jobs_.Cancel(ResyncJob::IsReplacement, "the replacement ended");
  LOG_WARNING("volume %s: replacing %s by %s failed: %s; %s keeps %s", name().c_str(),
              SlotName(r.slot).c_str(), r.target->name().c_str(), cause.c_str(),
              SlotName(r.slot).c_str(), r.old_name.c_str());
  asio::post(io_, [ended = std::move(r.ended), slot = r.slot, cause, target = r.target] {
    ended(Status::Error(
              EIO, "replacing " + SlotName(slot) + " by " + target->name() + " failed: " + cause),
          false);
  });
}

void ChecksummedVolume::ReplacementJobGone(const volume::MemberTarget* target) {
  if (!replacement_ || replacement_->target != target) return;
  ReplacementFailed(closing_      ? "the volume is stopping"
                    : superseded_ ? "the volume is fenced by a newer owner"
                                  : "its rebuild stopped");
}

void ChecksummedVolume::ReplacementCopyFailed(std::string cause,
                                              std::function<void(int err)> durable) {
  if (replacement_ && replacement_->phase == Replacement::Phase::kFinishing) {
    // The old member, still counted until the update naming the new owner is durable.
    replacement_->old_demotions.push_back(std::move(durable));
    return;
  }
  ReplacementFailed(cause);
  asio::post(io_, [durable = std::move(durable)] { durable(0); });
}

void ChecksummedVolume::FinishReplacement(Done done) {
  if (!replacement_ || replacement_->phase != Replacement::Phase::kRebuilding)
    return asio::post(io_, [done = std::move(done)] { done(EIO); });
  const uint32_t slot = replacement_->slot;
  const uint32_t k = copies_per_set();
  volume::MirrorSet& set = *sets_[slot / k];
  const uint32_t extra = set.replacement_copy();
  if (set.demoting(slot % k)) {
    // The old copy failed just now: its demotion is durable first, then the slot changes hands.
    return QueueUpdate(std::nullopt, [this, alive = lifetime_.Watch(), done](int) mutable {
      if (!alive.expired()) FinishReplacement(std::move(done));
    });
  }
  const bool old_current = set.role(slot % k) == volume::CopyRole::kCurrent;
  if (Status s = set.ExchangeTargets(slot % k, extra); !s.ok()) {
    LOG_ERROR("volume %s: %s", name().c_str(), s.message().c_str());
    return asio::post(io_, [done = std::move(done), err = s.err()] { done(err); });
  }
  Replacement& r = *replacement_;
  r.phase = Replacement::Phase::kFinishing;
  // The new member serves from now on; the old one is still written, and counted, until the
  // superblocks name the new owner (a crash before that restarts with the old member).
  set.SetRole(slot % k, volume::CopyRole::kCurrent);
  set.SetRole(extra, old_current ? volume::CopyRole::kCurrent : volume::CopyRole::kOut);
  volume::MemberTarget* old = std::exchange(copies_[slot], r.target);
  superblocks_[slot] = r.superblock;
  PendingUpdate update;
  update.slot_edit = SlotEdit{.slot = slot,
                              .flags = PendingFlags(slot),
                              .remove = false,
                              .owner = r.superblock.member_uuid};
  update.slot_change = SlotChange{slot, MemberState::kActive, 0};
  update.done = [this, alive = lifetime_.Watch(), old, done = std::move(done)](int err) mutable {
    if (alive.expired()) return;
    EndFinishing(old, err);
    done(err);
  };
  QueueUpdate(std::move(update));
}

void ChecksummedVolume::EndFinishing(volume::MemberTarget* old, int err) {
  Replacement r = std::move(*replacement_);
  replacement_.reset();
  volume::MirrorSet& set = *sets_[r.slot / copies_per_set()];
  set.SetRole(set.replacement_copy(), volume::CopyRole::kOut);
  if (old != nullptr) old->Abandon("replaced by " + r.target->name());
  for (auto& waiter : r.old_demotions)
    waiter(err);
  if (err == 0) {
    LOG_INFO("volume %s: %s replaced: %s by %s (set %u now [%s])", name().c_str(),
             SlotName(r.slot).c_str(), r.old_name.c_str(), r.target->name().c_str(),
             r.slot / copies_per_set(), set.Health().c_str());
  } else {
    LOG_ERROR(
        "volume %s: %s: recording its new member %s failed: %s; it serves, but a restart "
        "may not find it the slot's owner",
        name().c_str(), SlotName(r.slot).c_str(), r.target->name().c_str(), std::strerror(err));
  }
  Status status = err == 0 ? Status::Ok()
                           : Status::Error(EIO, "recording the new member failed: " +
                                                    std::string(std::strerror(err)));
  asio::post(io_,
             [ended = std::move(r.ended), status = std::move(status)] { ended(status, true); });
}

}  // namespace dst::integrity
