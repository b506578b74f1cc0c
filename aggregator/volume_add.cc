#include "aggregator/volume_add.h"

#include <string.h>  // explicit_bzero

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/loop_volumes.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member_return.h"
#include "aggregator/serve_options.h"
#include "common/join.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

// "linear, 8 MiB".
std::string Summary(const volume::BlockDevice& volume) {
  return std::string(volume::LayoutKindName(volume.State().layout)) + ", " +
         FormatSize(volume.size());
}

}  // namespace

Status ParseVolumeAdd(const std::vector<std::string>& words, VolumeConfig* v) {
  if (words.empty() || words[0].find('=') != std::string::npos)
    return Status::Invalid("volume add needs the volume's name");
  v->name = words[0];
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word.find("://") != std::string::npos) {
      v->members.push_back(word);
      continue;
    }
    const size_t eq = word.find('=');
    const std::string key = word.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : word.substr(eq + 1);
    if (eq == std::string::npos)
      return Status::Invalid("volume add: not KEY=VALUE: '" + word + "'");
    if (key == "raw") {
      if (value != "true" && value != "false")
        return Status::Invalid("raw: expected true or false");
      v->raw = value == "true";
      continue;
    }
    const VolumeOption* option = FindVolumeOption(key);
    if (!option || key == "name") return Status::Invalid("volume add: unknown key '" + key + "'");
    DST_RETURN_IF_ERROR(option->apply(value, v).Wrap(key));
  }
  return Status::Ok();
}

VolumeAdder::VolumeAdder(control::Server& server, ServeConfig config)
    : server_(server), work_(server.io) {
  SetConfig(std::move(config));
}

void VolumeAdder::SetConfig(ServeConfig config) {
  config_ = std::move(config);
  config_.volumes.clear();
  config_.default_volume.clear();
}

VolumeAdder::~VolumeAdder() {
  Stop();
}

void VolumeAdder::Stop() {
  if (stopped_) return;
  stopped_ = true;
  work_.JoinAll();
  for (auto& [id, job] : jobs_) {
    for (auto& member : job.members)
      server_.retired_members.push_back(std::move(member));
    if (job.opening) server_.retired_volumes.push_back(std::move(job.opening));
  }
  jobs_.clear();
  lifetime_.End();
}

Status VolumeAdder::Check(VolumeConfig& v) const {
  if (!v.raw) v.raw = false;
  ServeConfig one = config_;
  one.volumes = {v};
  DST_RETURN_IF_ERROR(ValidateServeConfig(one));
  if (!v.log_path.empty())
    return Status::Invalid("volume " + v.name +
                           ": a staging log (log) is opened at start only: restart serve");
  for (const auto& served : server_.volumes) {
    if (served->name() != v.name) continue;
    if (server_.registry.Withdrawn(served.get()))
      return Status::Error(EBUSY, "volume " + v.name + " is being removed");
    return Status::Error(EEXIST, "volume " + v.name + " is already served");
  }
  for (const auto& [id, job] : jobs_)
    if (job.v.name == v.name)
      return Status::Error(EBUSY, "volume " + v.name + " is already being added");
  for (const std::string& uri : v.members) {
    for (const control::MemberRef& ref : server_.member_refs)
      if (ref.member->name() == uri)
        return Status::Error(EBUSY, uri + " is a member of volume " + ref.volume);
    if (const std::string out = server_.returns ? server_.returns->VolumeWatching(uri) : "";
        !out.empty())
      return Status::Error(EBUSY,
                           uri + " is a member of volume " + out + " (out, it may come back)");
    for (const auto& [id, job] : jobs_)
      if (std::find(job.v.members.begin(), job.v.members.end(), uri) != job.v.members.end())
        return Status::Error(EBUSY, uri + " is being added in volume " + job.v.name);
  }
  return Status::Ok();
}

void VolumeAdder::Add(VolumeConfig v, Done done) {
  const auto refuse = [&](Status s) {
    LOG_WARNING("volume add %s refused: %s", v.name.c_str(), s.message().c_str());
    asio::post(server_.io, [done = std::move(done), s = std::move(s)] { done(s, ""); });
  };
  if (stopped_) return refuse(Status::Error(ESHUTDOWN, "the aggregator is stopping"));
  if (Status s = Check(v); !s.ok()) return refuse(std::move(s));
  const uint64_t id = next_job_++;
  Job& job = jobs_[id];
  job.v = std::move(v);
  job.done = std::move(done);
  LOG_INFO("volume add %s: %zu member(s), %s", job.v.name.c_str(), job.v.members.size(),
           *job.v.raw ? "raw" : "reading their superblocks");
  if (*job.v.raw) return OnPlanned(id, Status::Ok());
  // The thread works on its own copies; the plan comes back with the answer.
  auto plan = std::make_shared<AssemblyPlan>();
  work_.Run(
      id,
      [v = job.v, tls = config_.member_tls, plan] {
        DST_RETURN_IF_ERROR(PlanAssembly(v, tls, plan.get()));
        LogAssembly(*plan);
        // Durable before the first fenced connection carries the new epoch.
        if (plan->redundant)
          DST_RETURN_IF_ERROR(ClaimOwnership(tls, RunOwnerUuid(), &*plan->redundant));
        return Status::Ok();
      },
      [this, id, plan](Status s) {
        if (auto it = jobs_.find(id); it != jobs_.end()) it->second.plan = std::move(*plan);
        OnPlanned(id, std::move(s));
      });
}

void VolumeAdder::OnPlanned(uint64_t id, Status status) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  if (!status.ok()) return Fail(id, std::move(status));
  std::string name;
  const auto uris = OrderedMemberUris(job.v, *job.v.raw, job.plan, &name);
  auto join = MakeJoin([this, alive = lifetime_.Watch(), id](int) {
    if (!alive.expired()) OnConnected(id);
  });
  for (const auto& uri : uris) {
    if (!uri) {
      job.targets.push_back(nullptr);
      continue;
    }
    const uint32_t slot = static_cast<uint32_t>(job.targets.size());
    job.members.push_back(std::make_unique<member::NbdMember>(
        server_.io, *uri, config_.connections_per_member, MemberOptions(config_, job.plan, slot),
        config_.member_tls));
    job.targets.push_back(job.members.back().get());
    job.connecting.push_back(*uri);
  }
  job.connect_deadline = std::make_shared<asio::steady_timer>(server_.io, kAddConnectTimeout);
  job.connect_deadline->async_wait(
      [this, alive = lifetime_.Watch(), id, timer = job.connect_deadline](asio::error_code ec) {
        if (!ec && !alive.expired()) OnConnectTimeout(id);
      });
  // Copied: a connect that fails at once may end the job.
  std::vector<member::NbdMember*> members;
  for (const auto& member : job.members)
    members.push_back(member.get());
  for (member::NbdMember* member : members)
    member->AsyncConnect(
        [this, alive = lifetime_.Watch(), id, uri = member->name(), part = Part(join)](Status s) {
          if (alive.expired()) return;
          if (auto it = jobs_.find(id); it != jobs_.end()) {
            std::erase(it->second.connecting, uri);
            if (!s.ok() && it->second.connect_status.ok())
              it->second.connect_status = s.Wrap("member " + uri);
          }
          part(0);
        });
  join->Arrive(0);
}

void VolumeAdder::OnConnectTimeout(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.connecting.empty()) return;
  Fail(id, Status::Error(ETIMEDOUT, "member " + it->second.connecting.front() +
                                        ": connect timed out after " +
                                        std::to_string(kAddConnectTimeout.count()) + " s"));
}

void VolumeAdder::OnConnected(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  job.connect_deadline->cancel();
  if (!job.connect_status.ok()) return Fail(id, job.connect_status);
  if (*job.v.raw) {
    std::unique_ptr<volume::BlockDevice> volume;
    if (Status s = BuildRawVolume(job.v, job.targets, &volume); !s.ok())
      return Fail(id, std::move(s));
    return Install(id, std::move(volume));
  }
  if (Status s = MakeChecksummedVolume(config_, job.v, job.plan, job.targets, server_.io,
                                       server_.workers.get(), &job.opening);
      !s.ok())
    return Fail(id, std::move(s));
  job.opening->Open([this, alive = lifetime_.Watch(), id](int err) {
    // Posted: the open ends inside a member's completion, and a failure abandons the members.
    asio::post(server_.io, [this, alive, id, err] {
      if (!alive.expired()) OnOpened(id, err);
    });
  });
}

void VolumeAdder::OnOpened(uint64_t id, int err) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (err != 0)
    return Fail(
        id, Status::Error(err, "opening volume " + it->second.v.name + ": " + std::strerror(err)));
  Install(id, nullptr);
}

void VolumeAdder::Install(uint64_t id, std::unique_ptr<volume::BlockDevice> raw) {
  Job job = std::move(jobs_.at(id));
  jobs_.erase(id);
  const size_t index = server_.volumes.size();
  const std::string name = raw ? raw->name() : job.opening->name();
  size_t member_index = 0;
  for (auto& member : job.members) {
    while (job.targets[member_index] != member.get())
      ++member_index;  // past a missing slot
    if (!member->fenced() && config_.transactions.fencing != member::FencingMode::kOff)
      LOG_WARNING(
          "volume %s: member %zu %s cannot fence (not a dst export node): a resent write is not "
          "protected against a stale first copy landing later",
          name.c_str(), member_index, member->name().c_str());
    server_.member_refs.push_back({name, index, member_index, member.get(), {}});
    server_.members.push_back(std::move(member));
  }
  auto* copyable = dynamic_cast<volume::Volume*>(raw.get());
  if (raw)
    server_.volumes.push_back(std::move(raw));
  else
    InstallChecksummedVolume(config_, job.v, job.plan, job.targets, std::move(job.opening),
                             server_);
  volume::BlockDevice& volume = *server_.volumes.back();
  server_.registry.Add(&volume);
  if (copyable && server_.loop_volumes) server_.loop_volumes->Replicate(*copyable, job.v);
  LOG_INFO("volume %s: added (%s)", name.c_str(), Summary(volume).c_str());
  job.done(Status::Ok(), Summary(volume));
}

void VolumeAdder::Fail(uint64_t id, Status status) {
  Job job = std::move(jobs_.at(id));
  jobs_.erase(id);
  for (auto& member : job.members) {
    member->Abandon("volume add " + job.v.name + " refused");
    server_.retired_members.push_back(std::move(member));
  }
  if (job.opening) server_.retired_volumes.push_back(std::move(job.opening));
  if (!job.plan.key.empty()) explicit_bzero(job.plan.key.data(), job.plan.key.size());
  LOG_WARNING("volume add %s refused: %s", job.v.name.c_str(), status.message().c_str());
  job.done(status, "");
}

}  // namespace dst::aggregator
