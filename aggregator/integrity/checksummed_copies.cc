// The copies of a ChecksummedVolume (mirror and raid10): superblock updates,
// one at a time, each carrying every demotion and state change queued since
// the last; demotion of a failing copy, durable before the write that found it
// is acked; and the end of writing once a newer owner has fenced this
// aggregator out. See docs/redundancy.md, "Demotion" and "Single writer".
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/assembly.h"  // NewUuid
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/volume/set_geometry.h"
#include "common/join.h"
#include "common/log.h"

namespace dst::integrity {

// ---------------------------------------------------------------------------
// Superblock updates of a redundant volume.

Superblock ChecksummedVolume::CopySuperblock(const Superblock& view, uint32_t slot) const {
  Superblock sb = view;
  const Superblock& own = superblocks_[slot];
  sb.member_uuid = own.member_uuid;
  sb.member_index = own.member_index;
  sb.geometry.member_size = own.geometry.member_size;
  return sb;
}

bool ChecksummedVolume::LastCurrent(uint32_t slot) const {
  const uint32_t k = copies_per_set();
  const volume::MirrorSet& set = *sets_[slot / k];
  for (uint32_t c = 0; c < k; ++c)
    if (c != slot % k && set.role(c) == volume::CopyRole::kCurrent) return false;
  return true;
}

void ChecksummedVolume::QueueUpdate(std::optional<VolumeState> state, Done done) {
  PendingUpdate update;
  update.state = state;
  update.done = std::move(done);
  QueueUpdate(std::move(update));
}

void ChecksummedVolume::QueueSlotChange(uint32_t slot, MemberState state, uint64_t cursor,
                                        Done done) {
  PendingUpdate update;
  update.done = std::move(done);
  update.slot_change = SlotChange{slot, state, cursor};
  QueueUpdate(std::move(update));
}

void ChecksummedVolume::QueueMapEpoch(Done done) {
  PendingUpdate update;
  update.done = std::move(done);
  update.map_epoch = true;
  QueueUpdate(std::move(update));
}

void ChecksummedVolume::NewGeneration(Superblock& view) {
  for (size_t h = view.history.size() - 1; h > 0; --h)
    view.history[h] = view.history[h - 1];
  view.history[0] = view.generation;
  view.generation = NewUuid();
}

void ChecksummedVolume::QueueUpdate(PendingUpdate update) {
  if (superseded_) {
    asio::post(io_, [done = std::move(update.done)] {
      if (done) done(EROFS);
    });
    return;
  }
  pending_updates_.push_back(std::move(update));
  if (updating_) return;
  updating_ = true;
  // Posted, so that copies failing together are demoted in one update.
  asio::post(io_, [this, alive = lifetime_.Watch()] {
    if (!alive.expired()) StartUpdate();
  });
}

void ChecksummedVolume::Demote(uint32_t set, uint32_t copy, std::string cause,
                               std::function<void(int err)> durable) {
  if (copy >= copies_per_set()) return ReplacementCopyFailed(std::move(cause), std::move(durable));
  DemoteSlot(set * copies_per_set() + copy, std::move(cause), std::move(durable));
}

// The copy is dropped first (its queued and in-flight I/O fail at once), then
// recorded stale by the next superblock update of the others.
void ChecksummedVolume::DemoteSlot(uint32_t slot, std::string cause,
                                   std::function<void(int err)> durable, MemberState state) {
  if (superseded_) {  // the copy is fine; this aggregator may no longer write
    asio::post(io_, [durable = std::move(durable)] { durable(EROFS); });
    return;
  }
  const uint32_t k = copies_per_set();
  if (copies_[slot] != nullptr)
    copies_[slot]->Abandon((state == MemberState::kFailed ? "failed: " : "demoted to stale: ") +
                           cause);
  sets_[slot / k]->SetRole(slot % k, volume::CopyRole::kOut);
  // Writes in flight (intent bit set) may have missed the copy: their
  // regions' missed-write bits are set now, so that every sync of the map
  // from here on carries them, and written before the update (StartUpdate).
  std::vector<RegionRef> missed;
  for (uint64_t r : intent_.SetRegions(slot / k))
    missed.push_back({slot / k, r});
  intent_.MarkMissed(missed);
  pending_demotions_.push_back({slot, std::move(cause), std::move(durable), state});
  if (updating_) return;
  updating_ = true;
  asio::post(io_, [this, alive = lifetime_.Watch()] {
    if (!alive.expired()) StartUpdate();
  });
}

// One update: the view with every queued change, written and flushed to every
// copy that is present and not out.
void ChecksummedVolume::StartUpdate() {
  auto demotions = std::exchange(pending_demotions_, {});
  auto updates = std::exchange(pending_updates_, {});
  if (demotions.empty() && updates.empty()) {
    updating_ = false;
    return;
  }
  updating_ = true;
  Superblock view = view_;
  for (const Superblock& sb : superblocks_)
    view.event = std::max(view.event, sb.event);
  ++view.event;
  view.scrub = scrub_;
  bool new_generation = !demotions.empty();
  for (const PendingUpdate& u : updates) {
    if (u.state) view.state = *u.state;
    if (u.map_epoch) view.map_epoch = view.event;
    if (u.slot_edit) ApplySlotEdit(*u.slot_edit, view);
    if (u.key_slot) view.key_slots[u.key_slot->first] = u.key_slot->second;
    if (!u.slot_change) continue;
    const SlotChange& c = *u.slot_change;
    view.member_states[c.slot] = c.state;
    view.cursor[c.slot] = c.cursor;
    if (c.state == MemberState::kActive) {
      view.stale_since[c.slot] = 0;
      new_generation = true;  // the current set changed
    }
  }
  for (const PendingDemotion& d : demotions) {
    // A copy that fails while catching up starts over: a rebuild from the
    // beginning, a resync from its first stale-since (the maps still hold
    // everything since).
    const MemberState was = view.member_states[d.slot];
    const bool resyncing = was == MemberState::kResyncing && view.stale_since[d.slot] != 0;
    view.member_states[d.slot] = d.state == MemberState::kFailed   ? MemberState::kFailed
                                 : was == MemberState::kRebuilding ? MemberState::kRebuilding
                                                                   : MemberState::kStale;
    if (!resyncing) view.stale_since[d.slot] = view.event;
    view.cursor[d.slot] = 0;
  }
  if (new_generation) NewGeneration(view);
  if (demotions.empty())
    return WriteUpdate(std::move(view), std::move(demotions), std::move(updates), {});
  auto shared = std::make_shared<std::vector<PendingDemotion>>(std::move(demotions));
  WriteMissedPages(*shared, [this, alive = lifetime_.Watch(), view = std::move(view), shared,
                             updates = std::move(updates)](auto failed) mutable {
    if (!alive.expired())
      WriteUpdate(std::move(view), std::move(*shared), std::move(updates), std::move(failed));
  });
}

// Written to each copy alone: through the set the writes would wait for the
// demotion this update is about to make durable.
void ChecksummedVolume::WriteMissedPages(
    const std::vector<PendingDemotion>& demotions,
    std::function<void(std::vector<std::pair<uint32_t, int>> failed)> done) {
  const uint32_t k = copies_per_set();
  std::vector<uint32_t> sets;
  for (const PendingDemotion& d : demotions)
    if (std::find(sets.begin(), sets.end(), d.slot / k) == sets.end()) sets.push_back(d.slot / k);
  auto failed = std::make_shared<std::vector<std::pair<uint32_t, int>>>();
  auto join = MakeJoin([failed, done = std::move(done)](int) { done(std::move(*failed)); });
  for (uint32_t s : sets) {
    std::vector<RegionRef> regions;
    for (uint64_t r = 0; r < geometries_[s].regions(); ++r)
      if (intent_.IsMissed(s, r)) regions.push_back({s, r});
    auto pages = std::make_shared<std::vector<WriteIntent::MapPage>>(intent_.MissedPages(regions));
    if (pages->empty()) continue;
    for (uint32_t c = 0; c < k; ++c) {
      if (copies_[s * k + c] == nullptr || sets_[s]->role(c) == volume::CopyRole::kOut) continue;
      const uint32_t slot = s * k + c;
      auto record = [failed, slot, part = Part(join)](int err) {
        if (err != 0) failed->push_back({slot, err});
        part(0);
      };
      auto flush = [this, s, c, record](int err) {
        if (err != 0 || !members_[s]->capabilities().can_flush) return record(err);
        auto io = std::make_shared<volume::MemberIo>();
        io->op = volume::MemberOp::kFlush;
        io->only_copy = static_cast<int32_t>(c);
        io->done = record;
        members_[s]->Submit(std::move(io));
      };
      auto writes = MakeJoin(flush);
      for (WriteIntent::MapPage& page : *pages) {
        auto io = std::make_shared<volume::MemberIo>();
        io->op = volume::MemberOp::kWrite;
        io->offset = page.offset;
        io->length = page.bytes.size();
        io->data = page.bytes.data();
        io->only_copy = static_cast<int32_t>(c);
        io->done = [pages, part = Part(writes)](int err) { part(err); };
        members_[s]->Submit(std::move(io));
      }
      writes->Arrive(0);
    }
  }
  join->Arrive(0);
}

void ChecksummedVolume::WriteUpdate(Superblock view, std::vector<PendingDemotion> demotions,
                                    std::vector<PendingUpdate> updates,
                                    std::vector<std::pair<uint32_t, int>> failed_before) {
  const uint32_t k = copies_per_set();
  std::vector<uint32_t> targets;
  const auto failed_already = [&failed_before](uint32_t i) {
    return std::any_of(failed_before.begin(), failed_before.end(),
                       [i](const auto& f) { return f.first == i; });
  };
  for (uint32_t i = 0; i < copies_.size(); ++i)
    if (copies_[i] != nullptr && sets_[i / k]->role(i % k) != volume::CopyRole::kOut &&
        !failed_already(i))
      targets.push_back(i);
  auto results = std::make_shared<std::vector<int>>(targets.size(), 0);
  auto join = MakeJoin([this, alive = lifetime_.Watch(), view, targets, results,
                        demotions = std::move(demotions), updates = std::move(updates),
                        failed = std::move(failed_before)](int) mutable {
    if (alive.expired()) return;
    std::vector<uint32_t> written;
    for (size_t t = 0; t < targets.size(); ++t) {
      if ((*results)[t] == 0)
        written.push_back(targets[t]);
      else
        failed.push_back({targets[t], (*results)[t]});
    }
    FinishUpdate(view, std::move(written), std::move(failed), std::move(demotions),
                 std::move(updates));
  });
  for (size_t t = 0; t < targets.size(); ++t) {
    const uint32_t i = targets[t];
    auto record = [results, t, part = Part(join)](int err) {
      (*results)[t] = err;
      part(0);
    };
    auto slot = std::make_shared<std::vector<uint8_t>>(kSlotSize);
    if (Status s =
            Encode(CopySuperblock(view, i), std::span<uint8_t, kSlotSize>(slot->data(), kSlotSize));
        !s.ok()) {
      LOG_ERROR("volume %s: superblock of member %u: %s", name().c_str(), i, s.message().c_str());
      record(s.err());
      continue;
    }
    volume::MemberTarget* member = copies_[i];
    auto write = std::make_shared<volume::MemberIo>();
    write->op = volume::MemberOp::kWrite;
    write->offset = SlotOffset(NextSlot(view.event));
    write->length = kSlotSize;
    write->data = slot->data();
    write->done = [member, slot, record](int err) {
      if (err != 0 || !member->capabilities().can_flush) return record(err);
      auto flush = std::make_shared<volume::MemberIo>();
      flush->op = volume::MemberOp::kFlush;
      flush->done = record;
      member->Submit(std::move(flush));
    };
    member->Submit(std::move(write));
  }
  join->Arrive(0);
}

// The update is durable when every set has a current copy that took it. A
// copy that did not, while another current copy of its set did, is demoted
// in turn, and the waiters wait for that too; a set none of whose current
// copies took it fails the update.
void ChecksummedVolume::FinishUpdate(const Superblock& view, std::vector<uint32_t> written,
                                     std::vector<std::pair<uint32_t, int>> failed,
                                     std::vector<PendingDemotion> demotions,
                                     std::vector<PendingUpdate> updates) {
  const uint32_t k = copies_per_set();
  for (uint32_t i : written)
    superblocks_[i] = CopySuperblock(view, i);
  view_ = view;
  int err = 0;
  std::vector<std::pair<uint32_t, int>> to_demote;
  for (uint32_t s = 0; s < sets_.size(); ++s) {
    bool durable = false;
    for (uint32_t i : written)
      durable = durable || (i / k == s && sets_[s]->role(i % k) == volume::CopyRole::kCurrent);
    for (const auto& [i, e] : failed) {
      if (i / k != s) continue;
      LOG_ERROR("volume %s: superblock update of member %u %s: %s", name().c_str(), i,
                copies_[i]->name().c_str(), std::strerror(e));
      if (durable)
        to_demote.push_back({i, e});
      else if (err == 0)
        err = e;
    }
  }
  for (const PendingDemotion& d : demotions) {
    if (err == 0) {
      LOG_WARNING("volume %s: member %u %s %s (set %u now [%s]): %s", name().c_str(), d.slot,
                  copies_[d.slot] != nullptr ? copies_[d.slot]->name().c_str() : "(missing)",
                  d.state == MemberState::kFailed ? "failed" : "demoted to stale", d.slot / k,
                  sets_[d.slot / k]->Health().c_str(), d.cause.c_str());
    } else {
      LOG_ERROR("volume %s: member %u could not be recorded %s: %s", name().c_str(), d.slot,
                d.state == MemberState::kFailed ? "failed" : "stale", std::strerror(err));
    }
  }
  // A successful update carries every stale mark of the view, those of
  // demotions that failed to become durable before included.
  if (err == 0) {
    std::fill(undurable_demotions_.begin(), undurable_demotions_.end(), false);
  } else {
    for (const PendingDemotion& d : demotions)
      undurable_demotions_[d.slot] = true;
  }
  auto finish = [demotions = std::move(demotions), updates = std::move(updates)](int e) mutable {
    for (PendingDemotion& d : demotions)
      if (d.durable) d.durable(e);
    for (PendingUpdate& u : updates)
      if (u.done) u.done(e);
  };
  updating_ = false;
  if (err != 0 || to_demote.empty()) {
    finish(err);
  } else {
    auto join = MakeJoin(std::move(finish));
    for (const auto& [i, e] : to_demote)
      DemoteSlot(i, std::string("superblock update failed: ") + std::strerror(e), Part(join));
    join->Arrive(0);
  }
  if (!updating_ && (!pending_demotions_.empty() || !pending_updates_.empty())) {
    updating_ = true;
    asio::post(io_, [this, alive = lifetime_.Watch()] {
      if (!alive.expired()) StartUpdate();
    });
  }
}

void ChecksummedVolume::AwaitDurableDemotions(const std::vector<BlockRef>& refs, Done done) {
  if (!redundant()) return done(0);
  const uint32_t k = copies_per_set();
  std::vector<uint32_t> waiting;  // slots of the op's sets whose demotion is not durable
  for (const BlockRef& ref : refs)
    for (uint32_t c = 0; c < k; ++c)
      if (undurable_demotions_[ref.member * k + c] &&
          std::find(waiting.begin(), waiting.end(), ref.member * k + c) == waiting.end())
        waiting.push_back(ref.member * k + c);
  if (waiting.empty()) return done(0);
  QueueUpdate(
      std::nullopt, [this, alive = lifetime_.Watch(), waiting, done = std::move(done)](int err) {
        if (alive.expired()) return;
        if (err == 0) return done(0);
        for (uint32_t slot : waiting)
          LOG_ERROR("volume %s: member %u is still not recorded stale (%s): writes to set %u fail",
                    name().c_str(), slot, std::strerror(err), slot / copies_per_set());
        done(EIO);
      });
}

// ---------------------------------------------------------------------------
// Fenced out by a newer owner.

void ChecksummedVolume::Supersede(uint32_t slot) {
  if (superseded_ || !redundant()) return;
  superseded_ = true;
  // Resync, rebuild and scrub write copies and superblocks that are no longer this
  // aggregator's: they end here (their checkpoints fail with EROFS, logged).
  for (const auto kind :
       {BackgroundJob::Kind::kResync, BackgroundJob::Kind::kRebuild, BackgroundJob::Kind::kScrub})
    jobs_.Stop(kind);
  volume::MemberTarget* copy = slot < copies_.size() ? copies_[slot] : nullptr;
  if (copy == nullptr) return LogSuperseded({});
  // Reads are not fenced: the newer owner's superblock says who it is.
  auto slots = std::make_shared<std::vector<std::vector<uint8_t>>>(kSlotCount,
                                                                   std::vector<uint8_t>(kSlotSize));
  auto join = MakeJoin([this, alive = lifetime_.Watch(), slots](int) {
    if (!alive.expired()) LogSuperseded(*slots);
  });
  for (uint32_t i = 0; i < kSlotCount; ++i) {
    auto read = std::make_shared<volume::MemberIo>();
    read->op = volume::MemberOp::kRead;
    read->offset = SlotOffset(i);
    read->length = kSlotSize;
    read->data = (*slots)[i].data();
    read->done = [slots, i, part = Part(join)](int err) {
      if (err != 0) (*slots)[i].clear();
      part(0);
    };
    copy->Submit(std::move(read));
  }
  join->Arrive(0);
}

void ChecksummedVolume::StopWrites(const std::string& why) {
  if (superseded_) return;
  superseded_ = true;
  for (const auto kind :
       {BackgroundJob::Kind::kResync, BackgroundJob::Kind::kRebuild, BackgroundJob::Kind::kScrub})
    jobs_.Stop(kind);
  LOG_ERROR("volume %s: %s: no more writes", name().c_str(), why.c_str());
}

void ChecksummedVolume::LogSuperseded(const std::vector<std::vector<uint8_t>>& slots) {
  uint64_t newest = 0;
  for (const std::vector<uint8_t>& bytes : slots) {
    Superblock sb;
    if (!bytes.empty() && Decode(bytes, &sb).ok() && sb.volume_uuid == view_.volume_uuid)
      newest = std::max(newest, sb.ownership_epoch);
  }
  const std::string epoch = newest > view_.ownership_epoch
                                ? std::to_string(newest)
                                : std::to_string(view_.ownership_epoch + 1) + " or later";
  LOG_ERROR("volume %s: fenced by a newer owner (ownership epoch %s): no more writes",
            name().c_str(), epoch.c_str());
}

}  // namespace dst::integrity
