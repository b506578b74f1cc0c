#include "aggregator/member_add.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "aggregator/integrity/assembly.h"  // FormatUuid
#include "aggregator/member_return.h"
#include "aggregator/slot_member.h"
#include "common/log.h"

namespace dst::aggregator {

namespace {

// How log lines name what a job does.
const char* CommandName(bool replace) {
  return replace ? "member replace" : "member add";
}

}  // namespace

MemberAdder::MemberAdder(control::Server& server, Settings settings)
    : server_(server), settings_(std::move(settings)), work_(server.io) {}

MemberAdder::~MemberAdder() {
  Stop();
}

void MemberAdder::AddVolume(AddableVolume volume) {
  volumes_.push_back(std::move(volume));
}

Status MemberAdder::ForgetVolume(const integrity::ChecksummedVolume* volume) {
  for (size_t v = 0; v < volumes_.size(); ++v) {
    if (volumes_[v].volume != volume) continue;
    for (const auto* jobs : {&jobs_, &replacing_})
      for (const auto& [id, job] : *jobs)
        if (job.added == v)
          return Status::Error(
              EBUSY, std::string(job.replace ? "a member replace" : "a member add") + " of slot " +
                         std::to_string(job.slot) + " of volume " + volume->name() +
                         " is under way (" + job.uri + ")");
    volumes_[v].volume = nullptr;
  }
  return Status::Ok();
}

void MemberAdder::VolumeRemoved(size_t volume_index) {
  for (AddableVolume& v : volumes_)
    if (v.volume != nullptr && v.volume_index > volume_index) --v.volume_index;
}

void MemberAdder::Stop() {
  if (stopped_) return;
  stopped_ = true;
  work_.JoinAll();
  // A volume may hold a member whose AdoptMember has not answered yet, or one it is rebuilding.
  for (auto* jobs : {&jobs_, &replacing_}) {
    for (auto& [id, job] : *jobs)
      if (job.member) Retire(std::move(job.member));
    jobs->clear();
  }
  lifetime_.End();
}

void MemberAdder::Add(integrity::ChecksummedVolume& volume, const std::string& uri,
                      std::optional<uint32_t> slot, Done done) {
  Start(volume, uri, slot, false, std::move(done));
}

void MemberAdder::Replace(integrity::ChecksummedVolume& volume, uint32_t slot,
                          const std::string& uri, Done done) {
  Start(volume, uri, slot, true, std::move(done));
}

void MemberAdder::Retire(std::unique_ptr<member::NbdMember> member) {
  server_.retired_members.push_back(std::move(member));
}

void MemberAdder::Start(integrity::ChecksummedVolume& volume, const std::string& uri,
                        std::optional<uint32_t> slot, bool replace, Done done) {
  const auto refuse = [&](Status s) {
    asio::post(server_.io, [done = std::move(done), s = std::move(s)] { done(s, 0); });
  };
  if (stopped_) return refuse(Status::Error(ESHUTDOWN, "the aggregator is stopping"));
  const auto added = std::find_if(volumes_.begin(), volumes_.end(),
                                  [&](const AddableVolume& v) { return v.volume == &volume; });
  if (added == volumes_.end()) {
    // The volume's own refusal when it has one (a linear volume, not open, ...).
    uint32_t any = 0;
    Status s = volume.SlotToFill(slot, &any);
    return refuse(s.ok() ? Status::Invalid("volume " + volume.name() + " takes no new member")
                         : std::move(s));
  }
  for (const auto* jobs : {&jobs_, &replacing_})
    for (const auto& [id, job] : *jobs)
      if (job.uri == uri)
        return refuse(Status::Error(EBUSY, uri + " is already being added to volume " +
                                               volumes_[job.added].volume->name()));
  // Held from here until AdoptMember (or the refusal): nothing else comes to the slot meanwhile.
  uint32_t chosen = slot.value_or(0);
  if (Status s = replace ? volume.ReserveReplacement(chosen) : volume.ReserveSlot(slot, &chosen);
      !s.ok())
    return refuse(std::move(s));
  const uint64_t id = next_job_++;
  Job job;
  job.added = static_cast<size_t>(added - volumes_.begin());
  job.slot = chosen;
  job.uri = uri;
  job.done = std::move(done);
  job.replace = replace;
  jobs_.emplace(id, std::move(job));
  LOG_INFO("volume %s: %s %s to slot %u: reading it", volume.name().c_str(), CommandName(replace),
           uri.c_str(), chosen);
  auto read = std::make_shared<integrity::MemberReadResult>();
  work_.Run(
      id,
      [uri, tls = settings_.tls, read] { return integrity::ReadSuperblocks(uri, tls, read.get()); },
      [this, id, read](Status s) { OnRead(id, std::move(s), *read); });
}

Status MemberAdder::CheckExisting(const integrity::ChecksummedVolume& volume, uint32_t slot,
                                  bool replace, const std::string& uri,
                                  const integrity::MemberReadResult& read) {
  if (read.read_only) return Status::Error(EROFS, uri + " is read-only");
  if (!read.HasMagic()) return Status::Ok();
  if (!read.choice_status.ok())
    return Status::Error(EEXIST, uri + " holds a dst superblock that cannot be used (" +
                                     read.choice_status.message() +
                                     "): not formatted over; give an empty export");
  const integrity::Superblock& its = read.choice.superblock;
  // Every slot's superblock (a missing one's is the view) carries the volume's UUID.
  if (its.volume_uuid != volume.superblock(0).volume_uuid)
    return Status::Error(EEXIST, uri + " holds a member of volume " + its.name + " (uuid " +
                                     integrity::FormatUuid(its.volume_uuid) +
                                     "): not formatted over; give an empty export");
  // Its own old member, out, may be formatted over; any other copy of this volume may be live.
  if (its.member_index != slot)
    return Status::Error(EEXIST, uri + " holds slot " + std::to_string(its.member_index) + " of " +
                                     volume.name() +
                                     ": a copy of this volume is not formatted over");
  // The member being replaced serves until its replacement is complete.
  if (replace && its.member_uuid == volume.superblock(slot).member_uuid)
    return Status::Error(
        EEXIST, uri + " holds the member of slot " + std::to_string(slot) + " of " + volume.name() +
                    " being replaced: a copy of this volume is not formatted over");
  return Status::Ok();
}

void MemberAdder::OnRead(uint64_t id, Status status, const integrity::MemberReadResult& read) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  integrity::ChecksummedVolume& volume = *volumes_[job.added].volume;
  if (!status.ok()) return Finish(id, std::move(status));
  if (Status s = CheckExisting(volume, job.slot, job.replace, job.uri, read); !s.ok())
    return Finish(id, std::move(s));
  if (Status s = volume.NewMemberSuperblock(job.slot, job.uri, read.export_size, &job.superblock);
      !s.ok())
    return Finish(id, std::move(s));
  if (read.HasMagic())
    LOG_WARNING("volume %s: %s %s: formatting over an old member of slot %u", volume.name().c_str(),
                CommandName(job.replace), job.uri.c_str(), job.slot);
  LOG_INFO("volume %s: %s %s to slot %u: formatting it (member %s)", volume.name().c_str(),
           CommandName(job.replace), job.uri.c_str(), job.slot,
           integrity::FormatUuid(job.superblock.member_uuid).c_str());
  work_.Run(
      id,
      [uri = job.uri, tls = settings_.tls, sb = job.superblock] {
        return integrity::WriteNewMember(uri, tls, sb);
      },
      [this, id](Status s) { OnFormatted(id, std::move(s)); });
}

void MemberAdder::OnFormatted(uint64_t id, Status status) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  if (!status.ok()) return Finish(id, status.Wrap("formatting " + job.uri));
  // WriteNewMember wrote the superblock with event 1 in slot 1: what the member holds now.
  job.superblock.event = 1;
  const AddableVolume& added = volumes_[job.added];
  job.member =
      NewSlotMember(server_, added, job.slot, job.uri, settings_.connections, settings_.tls);
  job.member->AsyncConnect([this, alive = lifetime_.Watch(), id](Status s) {
    if (alive.expired()) return;
    OnConnected(id, std::move(s));
  });
}

void MemberAdder::OnConnected(uint64_t id, Status status) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  if (!status.ok()) return Finish(id, status.Wrap("connecting " + job.uri));
  job.handed = true;  // AdoptMember ends the slot's reservation
  if (job.replace) {
    volumes_[job.added].volume->AdoptReplacement(
        job.slot, job.member.get(), job.superblock,
        [this, alive = lifetime_.Watch(), id](Status s) {
          if (alive.expired()) return;
          OnAdopted(id, std::move(s));
        },
        [this, alive = lifetime_.Watch(), id](Status s, bool installed) {
          if (alive.expired()) return;
          OnReplaced(id, s, installed);
        });
    return;
  }
  volumes_[job.added].volume->AdoptMember(job.slot, job.member.get(), job.superblock,
                                          [this, alive = lifetime_.Watch(), id](Status s) {
                                            if (alive.expired()) return;
                                            OnAdopted(id, std::move(s));
                                          });
}

void MemberAdder::OnAdopted(uint64_t id, Status status) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  const AddableVolume& added = volumes_[job.added];
  if (job.replace) {
    // One refused after all is retired: the volume may have written it before it refused.
    if (!status.ok()) {
      job.member->Abandon("member replace refused: " + status.message());
      Retire(std::move(job.member));
      return Finish(id, std::move(status));
    }
    // Kept here until the volume says how the replacement ended.
    LOG_INFO("volume %s: member replace %s in slot %u: rebuilding beside the old member",
             added.volume->name().c_str(), job.uri.c_str(), job.slot);
    Done done = std::exchange(job.done, nullptr);
    const uint32_t slot = job.slot;
    replacing_.emplace(id, std::move(job));
    jobs_.erase(it);
    return done(Status::Ok(), slot);
  }
  // EIO: taken, but its rebuild could not start; the volume holds it as the slot's copy (out),
  // so it is kept like an accepted one.
  if (status.ok() || status.err() == EIO) {
    InstallSlotMember(server_, added.volume->name(), added.volume_index, job.slot,
                      std::move(job.member));
    if (server_.returns) server_.returns->SlotMemberChanged(added.volume_index, job.slot, job.uri);
  }
  Finish(id, std::move(status));
}

void MemberAdder::OnReplaced(uint64_t id, const Status& status, bool installed) {
  if (auto early = jobs_.find(id); early != jobs_.end()) {
    // Ended before its rebuild started (the new member failed a client write meanwhile).
    Retire(std::move(early->second.member));
    return Finish(id, status);
  }
  auto it = replacing_.find(id);
  if (it == replacing_.end()) return;
  Job job = std::move(it->second);
  replacing_.erase(it);
  const AddableVolume& added = volumes_[job.added];
  if (!installed) {
    LOG_WARNING("volume %s: member replace %s in slot %u: %s", added.volume->name().c_str(),
                job.uri.c_str(), job.slot, status.message().c_str());
    return Retire(std::move(job.member));
  }
  InstallSlotMember(server_, added.volume->name(), added.volume_index, job.slot,
                    std::move(job.member));
  if (server_.returns) server_.returns->SlotMemberChanged(added.volume_index, job.slot, job.uri);
}

void MemberAdder::Finish(uint64_t id, Status status) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job job = std::move(it->second);
  jobs_.erase(it);
  integrity::ChecksummedVolume& volume = *volumes_[job.added].volume;
  if (!job.handed && job.replace) volume.ReleaseReplacement(job.slot);
  if (!job.handed && !job.replace) volume.ReleaseSlot(job.slot);
  const std::string& name = volume.name();
  if (status.ok())
    LOG_INFO("volume %s: %s %s to slot %u: added, rebuilding", name.c_str(),
             CommandName(job.replace), job.uri.c_str(), job.slot);
  else
    LOG_WARNING("volume %s: %s %s to slot %u refused: %s", name.c_str(), CommandName(job.replace),
                job.uri.c_str(), job.slot, status.message().c_str());
  if (job.member) {
    dropped_.push_back(std::move(job.member));
    asio::post(server_.io, [this, alive = lifetime_.Watch()] {
      if (!alive.expired()) dropped_.clear();
    });
  }
  job.done(status, job.slot);
}

}  // namespace dst::aggregator
