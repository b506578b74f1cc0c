#include "aggregator/member_return.h"

#include <algorithm>
#include <cerrno>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/slot_member.h"
#include "common/log.h"

namespace dst::aggregator {

ReturnWatcher::ReturnWatcher(control::Server& server, Settings settings)
    : server_(server), settings_(std::move(settings)), timer_(server.io) {}

ReturnWatcher::~ReturnWatcher() {
  Stop();
}

void ReturnWatcher::AddVolume(WatchedVolume volume) {
  const bool first = volumes_.empty();
  volumes_.push_back(std::move(volume));
  // Added while serving (volume add): the probes had nothing to watch until now.
  if (first && started_) Arm();
}

std::string ReturnWatcher::VolumeWatching(const std::string& uri) const {
  for (const WatchedVolume& v : volumes_) {
    if (v.volume == nullptr) continue;
    if (std::find(v.unread.begin(), v.unread.end(), uri) != v.unread.end() ||
        std::find(v.uris.begin(), v.uris.end(), std::optional(uri)) != v.uris.end())
      return v.volume->name();
  }
  return "";
}

void ReturnWatcher::Start() {
  started_ = true;
  Arm();
}

void ReturnWatcher::Stop() {
  if (stopped_) return;
  stopped_ = true;
  timer_.cancel();
  // Its results are not looked at: the handler it posts finds the lifetime ended.
  if (round_.joinable()) round_.join();
  // A volume may hold a member whose ReattachCopy has not answered yet.
  for (auto& [id, pending] : pending_)
    server_.retired_members.push_back(std::move(pending.member));
  pending_.clear();
  lifetime_.End();
}

void ReturnWatcher::Arm() {
  if (stopped_ || volumes_.empty() || settings_.interval.count() == 0) return;
  timer_.expires_after(settings_.interval);
  timer_.async_wait([this, alive = lifetime_.Watch()](const asio::error_code& ec) {
    if (ec || alive.expired()) return;
    StartRound();
  });
}

std::vector<ReturnWatcher::Candidate> ReturnWatcher::Candidates() const {
  std::vector<Candidate> out;
  for (size_t w = 0; w < volumes_.size(); ++w) {
    const WatchedVolume& watched = volumes_[w];
    if (watched.volume == nullptr) continue;  // removed
    // Nothing can come back to a volume without a returnable slot: not even a member that was
    // unreadable at start (it would name a slot that is current or catching up).
    const std::vector<uint32_t> returnable = watched.volume->ReturnableSlots();
    if (returnable.empty()) continue;
    std::vector<std::string> uris;
    for (uint32_t slot : returnable)
      if (slot < watched.uris.size() && watched.uris[slot]) uris.push_back(*watched.uris[slot]);
    uris.insert(uris.end(), watched.unread.begin(), watched.unread.end());
    std::sort(uris.begin(), uris.end());
    uris.erase(std::unique(uris.begin(), uris.end()), uris.end());
    for (std::string& uri : uris) {
      const bool pending = std::any_of(pending_.begin(), pending_.end(), [&](const auto& p) {
        return p.second.watched == w && p.second.uri == uri;
      });
      if (!pending) out.push_back({w, std::move(uri)});
    }
  }
  return out;
}

void ReturnWatcher::StartRound() {
  if (stopped_) return;
  std::vector<Candidate> candidates = Candidates();
  if (candidates.empty()) {
    Arm();
    return;
  }
  // The thread touches only what it was given; `this` is used back on the loop, once the
  // lifetime says the watcher is still there.
  round_ = std::thread([this, &io = server_.io, tls = settings_.tls,
                        candidates = std::move(candidates), alive = lifetime_.Watch()] {
    std::vector<Probe> probes(candidates.size());
    std::vector<std::thread> readers;
    for (size_t i = 0; i < candidates.size(); ++i) {
      probes[i].candidate = candidates[i];
      readers.emplace_back([&probe = probes[i], &tls] {
        probe.status = integrity::ReadSuperblocks(probe.candidate.uri, tls, &probe.read);
      });
    }
    for (std::thread& reader : readers)
      reader.join();
    asio::post(io, [this, alive, probes = std::move(probes)]() mutable {
      if (alive.expired()) return;
      FinishRound(std::move(probes));
    });
  });
}

void ReturnWatcher::FinishRound(std::vector<Probe> probes) {
  // The thread has posted this as its last act: the join does not wait.
  if (round_.joinable()) round_.join();
  if (stopped_) return;
  for (const Probe& probe : probes)
    Consider(probe);
  Arm();
}

void ReturnWatcher::Consider(const Probe& probe) {
  const size_t w = probe.candidate.watched;
  const std::string& uri = probe.candidate.uri;
  if (volumes_[w].volume == nullptr) return;  // removed since the round started
  if (!probe.status.ok()) {
    LOG_DEBUG("volume %s: %s is not back: %s", NameOf(w).c_str(), uri.c_str(),
              probe.status.message().c_str());
    return;
  }
  if (!probe.read.choice_status.ok()) {
    Refuse(w, uri, std::nullopt, probe.read.choice_status.message());
    return;
  }
  const integrity::Superblock& its = probe.read.choice.superblock;
  const integrity::ChecksummedVolume& volume = *volumes_[w].volume;
  // Every slot's superblock (a missing one's is the view) carries the volume's UUID.
  if (its.volume_uuid != volume.superblock(0).volume_uuid) {
    Refuse(w, uri, std::nullopt,
           "it is a member of volume " + its.name + " (uuid " +
               integrity::FormatUuid(its.volume_uuid) + ")");
    return;
  }
  const uint32_t slot = its.member_index;
  const std::vector<uint32_t> returnable = volume.ReturnableSlots();
  if (std::find(returnable.begin(), returnable.end(), slot) == returnable.end()) {
    LOG_DEBUG("volume %s: %s answers for slot %u, which is not out", NameOf(w).c_str(), uri.c_str(),
              slot);
    return;
  }
  for (const auto& [id, pending] : pending_)
    if (pending.watched == w && pending.slot == slot) return;
  Attach(w, slot, uri, its);
}

void ReturnWatcher::Attach(size_t watched, uint32_t slot, const std::string& uri,
                           const integrity::Superblock& its) {
  const uint64_t id = next_pending_++;
  auto member =
      NewSlotMember(server_, volumes_[watched], slot, uri, settings_.connections, settings_.tls);
  member::NbdMember* connecting = member.get();
  pending_.emplace(id, Pending{watched, slot, uri, std::move(member)});
  LOG_DEBUG("volume %s: %s answers for slot %u: connecting", NameOf(watched).c_str(), uri.c_str(),
            slot);
  connecting->AsyncConnect([this, alive = lifetime_.Watch(), id, its](Status status) {
    if (alive.expired()) return;
    OnConnected(id, its, std::move(status));
  });
}

void ReturnWatcher::OnConnected(uint64_t id, integrity::Superblock its, Status status) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending& pending = it->second;
  if (!status.ok()) {
    Refuse(pending.watched, pending.uri, pending.slot, "connect: " + status.message());
    Drop(std::move(pending.member));
    pending_.erase(it);
    return;
  }
  volumes_[pending.watched].volume->ReattachCopy(pending.slot, pending.member.get(), its,
                                                 [this, alive = lifetime_.Watch(), id](Status s) {
                                                   if (alive.expired()) return;
                                                   OnReattached(id, std::move(s));
                                                 });
}

void ReturnWatcher::OnReattached(uint64_t id, Status status) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending pending = std::move(it->second);
  pending_.erase(it);
  switch (status.err()) {
    case 0:
      Adopt(std::move(pending));
      return;
    case EINVAL:
      Refuse(pending.watched, pending.uri, pending.slot, RuleOf(pending, status.message()));
      break;
    case EBUSY:      // the slot is not out any more
    case ERANGE:     // no such slot
    case ESHUTDOWN:  // the volume is closing
    case EROFS:      // a newer owner has the volume
      LOG_DEBUG("volume %s: %s not taken back into slot %u: %s", NameOf(pending.watched).c_str(),
                pending.uri.c_str(), pending.slot, status.message().c_str());
      break;
    default:
      // Taken, but its catch-up could not start: the slot is out again with this member as its
      // copy, which the volume may still name, so it is kept like an accepted one; a later probe
      // replaces it.
      Refuse(pending.watched, pending.uri, pending.slot, status.message());
      Adopt(std::move(pending));
      return;
  }
  Drop(std::move(pending.member));
}

void ReturnWatcher::Adopt(Pending pending) {
  WatchedVolume& watched = volumes_[pending.watched];
  InstallSlotMember(server_, watched.volume->name(), watched.volume_index, pending.slot,
                    std::move(pending.member));
  watched.uris.at(pending.slot) = pending.uri;
  std::erase(watched.unread, pending.uri);
  std::erase_if(refusals_logged_, [&](const auto& r) { return r.first == pending.uri; });
  // The volume has logged `volume V: slot S URI is back: ...`.
}

void ReturnWatcher::SlotMemberChanged(size_t volume_index, uint32_t slot, const std::string& uri) {
  for (WatchedVolume& watched : volumes_)
    if (watched.volume_index == volume_index && slot < watched.uris.size())
      watched.uris[slot] = uri;
  std::erase_if(refusals_logged_, [&](const auto& r) { return r.first == uri; });
}

Status ReturnWatcher::Busy(const integrity::ChecksummedVolume* volume) const {
  for (const auto& [id, pending] : pending_)
    if (volumes_[pending.watched].volume == volume)
      return Status::Error(EBUSY, pending.uri + " is coming back to slot " +
                                      std::to_string(pending.slot) + " of volume " +
                                      volume->name() + "; try again in a moment");
  return Status::Ok();
}

void ReturnWatcher::ForgetVolume(const integrity::ChecksummedVolume* volume) {
  for (WatchedVolume& watched : volumes_)
    if (watched.volume == volume) watched.volume = nullptr;
}

void ReturnWatcher::VolumeRemoved(size_t volume_index) {
  for (WatchedVolume& watched : volumes_)
    if (watched.volume != nullptr && watched.volume_index > volume_index) --watched.volume_index;
}

void ReturnWatcher::Drop(std::unique_ptr<member::NbdMember> member) {
  dropped_.push_back(std::move(member));
  asio::post(server_.io, [this, alive = lifetime_.Watch()] {
    if (!alive.expired()) dropped_.clear();
  });
}

std::string ReturnWatcher::RuleOf(const Pending& pending, const std::string& refusal) const {
  const std::string who = "slot " + std::to_string(pending.slot) + " of " +
                          NameOf(pending.watched) + ": " + pending.uri + " refused: ";
  return refusal.starts_with(who) ? refusal.substr(who.size()) : refusal;
}

void ReturnWatcher::Refuse(size_t watched, const std::string& uri, std::optional<uint32_t> slot,
                           const std::string& reason) {
  if (!refusals_logged_.insert({uri, reason}).second) return;
  if (slot)
    LOG_WARNING("volume %s: %s cannot come back to slot %u: %s", NameOf(watched).c_str(),
                uri.c_str(), *slot, reason.c_str());
  else
    LOG_WARNING("volume %s: %s cannot come back: %s", NameOf(watched).c_str(), uri.c_str(),
                reason.c_str());
}

const std::string& ReturnWatcher::NameOf(size_t watched) const {
  return volumes_[watched].volume->name();
}

}  // namespace dst::aggregator
