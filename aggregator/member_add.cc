#include "aggregator/member_add.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "aggregator/integrity/assembly.h"  // FormatUuid
#include "aggregator/member_return.h"
#include "aggregator/slot_member.h"
#include "common/log.h"

namespace dst::aggregator {

MemberAdder::MemberAdder(control::Server& server, Settings settings)
    : server_(server), settings_(std::move(settings)) {}

MemberAdder::~MemberAdder() {
  Stop();
}

void MemberAdder::AddVolume(AddableVolume volume) {
  volumes_.push_back(std::move(volume));
}

void MemberAdder::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // Their results are not looked at: the handlers they post find the lifetime ended.
  for (auto& [id, thread] : threads_)
    thread.join();
  threads_.clear();
  // A volume may hold a member whose AdoptMember has not answered yet.
  for (auto& [id, job] : jobs_)
    if (job.member) server_.retired_members.push_back(std::move(job.member));
  jobs_.clear();
  lifetime_.End();
}

void MemberAdder::Add(integrity::ChecksummedVolume& volume, const std::string& uri,
                      std::optional<uint32_t> slot, Done done) {
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
  for (const auto& [id, job] : jobs_)
    if (job.uri == uri)
      return refuse(Status::Error(
          EBUSY, uri + " is already being added to volume " + volumes_[job.added].volume->name()));
  // Held from here until AdoptMember (or the refusal): nothing else comes to the slot meanwhile.
  uint32_t chosen = 0;
  if (Status s = volume.ReserveSlot(slot, &chosen); !s.ok()) return refuse(std::move(s));
  const uint64_t id = next_job_++;
  Job job;
  job.added = static_cast<size_t>(added - volumes_.begin());
  job.slot = chosen;
  job.uri = uri;
  job.done = std::move(done);
  jobs_.emplace(id, std::move(job));
  LOG_INFO("volume %s: member add %s to slot %u: reading it", volume.name().c_str(), uri.c_str(),
           chosen);
  auto read = std::make_shared<integrity::MemberReadResult>();
  OffLoop(
      id,
      [uri, tls = settings_.tls, read] { return integrity::ReadSuperblocks(uri, tls, read.get()); },
      [this, id, read](Status s) { OnRead(id, std::move(s), *read); });
}

void MemberAdder::OffLoop(uint64_t id, std::function<Status()> work,
                          std::function<void(Status)> then) {
  threads_.emplace(id, std::thread([this, &io = server_.io, work = std::move(work),
                                    then = std::move(then), alive = lifetime_.Watch(), id] {
                     Status s = work();
                     asio::post(io, [this, alive, id, then, s = std::move(s)] {
                       if (alive.expired()) return;
                       // The thread has posted this as its last act: the join does not wait.
                       if (auto t = threads_.find(id); t != threads_.end()) {
                         t->second.join();
                         threads_.erase(t);
                       }
                       then(s);
                     });
                   }));
}

Status MemberAdder::CheckExisting(const integrity::ChecksummedVolume& volume, uint32_t slot,
                                  const std::string& uri, const integrity::MemberReadResult& read) {
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
  return Status::Ok();
}

void MemberAdder::OnRead(uint64_t id, Status status, const integrity::MemberReadResult& read) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  integrity::ChecksummedVolume& volume = *volumes_[job.added].volume;
  if (!status.ok()) return Finish(id, std::move(status));
  if (Status s = CheckExisting(volume, job.slot, job.uri, read); !s.ok())
    return Finish(id, std::move(s));
  if (Status s = volume.NewMemberSuperblock(job.slot, job.uri, read.export_size, &job.superblock);
      !s.ok())
    return Finish(id, std::move(s));
  if (read.HasMagic())
    LOG_WARNING("volume %s: member add %s: formatting over the old member of slot %u",
                volume.name().c_str(), job.uri.c_str(), job.slot);
  LOG_INFO("volume %s: member add %s to slot %u: formatting it (member %s)", volume.name().c_str(),
           job.uri.c_str(), job.slot, integrity::FormatUuid(job.superblock.member_uuid).c_str());
  OffLoop(
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
  // EIO: taken, but its rebuild could not start; the volume holds it as the slot's copy (out),
  // so it is kept like an accepted one.
  if (status.ok() || status.err() == EIO) {
    InstallSlotMember(server_, added.volume->name(), added.volume_index, job.slot,
                      std::move(job.member));
    if (server_.returns) server_.returns->SlotMemberChanged(added.volume_index, job.slot, job.uri);
  }
  Finish(id, std::move(status));
}

void MemberAdder::Finish(uint64_t id, Status status) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job job = std::move(it->second);
  jobs_.erase(it);
  integrity::ChecksummedVolume& volume = *volumes_[job.added].volume;
  if (!job.handed) volume.ReleaseSlot(job.slot);
  const std::string& name = volume.name();
  if (status.ok())
    LOG_INFO("volume %s: member add %s to slot %u: added, rebuilding", name.c_str(),
             job.uri.c_str(), job.slot);
  else
    LOG_WARNING("volume %s: member add %s to slot %u refused: %s", name.c_str(), job.uri.c_str(),
                job.slot, status.message().c_str());
  if (job.member) {
    dropped_.push_back(std::move(job.member));
    asio::post(server_.io, [this, alive = lifetime_.Watch()] {
      if (!alive.expired()) dropped_.clear();
    });
  }
  job.done(status, job.slot);
}

}  // namespace dst::aggregator
