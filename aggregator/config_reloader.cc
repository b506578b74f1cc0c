#include "aggregator/config_reloader.h"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "aggregator/member_return.h"
#include "aggregator/volume_add.h"
#include "aggregator/volume_remove.h"
#include "common/join.h"
#include "common/log.h"

namespace dst::aggregator {

namespace {

Status ReadText(const std::string& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, path);
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return Status::FromErrno(EIO, path);
  *text = out.str();
  return Status::Ok();
}

volume::BlockDevice* Find(const control::Server& server, const std::string& name) {
  for (const auto& volume : server.volumes)
    if (volume->name() == name) return volume.get();
  return nullptr;
}

}  // namespace

// What steps 3 to 5 did; shared with the completions of the removals and adds.
struct ConfigReloader::Outcome {
  ReloadPlan plan;
  size_t added = 0;
  size_t removed = 0;
  size_t changed = 0;
  std::vector<std::string> failures;  // "volume gamma not added: ..."
  Done done;
};

ConfigReloader::ConfigReloader(control::Server& server, ServeArgs args, ServeConfig running)
    : server_(server), args_(std::move(args)) {
  running_.config = std::move(running);
  if (!args_.config_file.empty())
    running_read_ = ReadText(args_.config_file, &running_.text).Wrap("reading back the file");
}

void ConfigReloader::Stop() {
  stopped_ = true;
  lifetime_.End();
}

Status ConfigReloader::Load(LoadedConfig* next) const {
  DST_RETURN_IF_ERROR(ReadText(args_.config_file, &next->text));
  DST_RETURN_IF_ERROR(ServeConfigFromArgs(args_, &next->config));
  return ValidateServeConfig(next->config);
}

ServedVolumes ConfigReloader::Served(const ServeConfig& next) const {
  ServedVolumes served;
  for (const auto& volume : server_.volumes)
    served.names.push_back(volume->name());
  for (const control::MemberRef& ref : server_.member_refs)
    served.member_volume.emplace(ref.member->name(), ref.volume);
  // A member that is out belongs to its volume still: the return watcher may bring it back.
  if (server_.returns)
    for (const VolumeConfig& v : next.volumes)
      for (const std::string& uri : v.members)
        if (std::string out = server_.returns->VolumeWatching(uri); !out.empty())
          served.member_volume.emplace(uri, std::move(out));
  return served;
}

Status ConfigReloader::CheckServed(const ReloadPlan& plan) const {
  for (const auto& volume : server_.volumes)
    if (server_.registry.Withdrawn(volume.get()))
      return Status::Error(
          EBUSY, "volume " + volume->name() + " is being removed: reload once it is gone");
  for (const std::string& name : plan.remove) {
    const size_t clients = server_.registry.TrafficOf(Find(server_, name)).connected.size();
    if (clients > 0)
      return Status::Error(EBUSY, "volume " + name + " has " + std::to_string(clients) +
                                      " client(s) connected: a reload does not end them "
                                      "(disconnect them, or volume remove " +
                                      name + " --force)");
  }
  return Status::Ok();
}

void ConfigReloader::Reload(Done done) {
  const auto refuse = [&done](Status s) {
    LOG_WARNING("reload refused: %s", s.message().c_str());
    done(std::move(s), "");
  };
  if (args_.config_file.empty())
    return refuse(Status::Invalid("serve was started without --config: nothing to reload"));
  if (stopped_) return refuse(Status::Error(ESHUTDOWN, "the aggregator is stopping"));
  if (busy_) return refuse(Status::Error(EBUSY, "a reload is under way"));
  if (!running_read_.ok()) return refuse(running_read_);
  LoadedConfig next;
  if (Status s = Load(&next); !s.ok()) return refuse(std::move(s));
  auto outcome = std::make_shared<Outcome>();
  if (Status s = PlanReload(running_, next, Served(next.config), &outcome->plan); !s.ok())
    return refuse(std::move(s));
  if (Status s = CheckServed(outcome->plan); !s.ok()) return refuse(std::move(s));
  LOG_INFO("reload: %zu volume(s) to add, %zu to remove, %zu live key(s) changed",
           outcome->plan.add.size(), outcome->plan.remove.size(), outcome->plan.live_keys.size());
  busy_ = true;
  outcome->done = std::move(done);
  outcome->changed = ApplyLive(next.config, outcome->plan);
  running_ = std::move(next);
  RemoveVolumes(std::move(outcome));
}

size_t ConfigReloader::ApplyLive(const ServeConfig& next, const ReloadPlan& plan) {
  for (const std::string& key : plan.live_keys)
    LOG_INFO("reload: %s changed", key.c_str());
  server_.limits.per_connection = next.max_inflight_per_client;
  server_.limits.total = next.max_inflight_total;
  server_.limits.WakeWaitersThatFit();
  server_.policy.handshake_timeout = next.handshake_timeout;
  server_.policy.request_timeout = next.request_timeout;
  server_.policy.max_connections_per_address = next.max_connections_per_address;
  if (server_.volume_adder) server_.volume_adder->SetConfig(next);
  if (!plan.rates_changed) return 0;
  size_t changed = 0;
  for (integrity::ChecksummedVolume* volume : server_.checksummed) {
    if (std::find(plan.kept.begin(), plan.kept.end(), volume->name()) == plan.kept.end()) continue;
    // Validated with the file (0 < min <= max): it cannot be refused.
    if (Status s = volume->SetRateLimits({.min_bytes_per_second = next.resync_rate_min,
                                          .max_bytes_per_second = next.resync_rate_max});
        !s.ok()) {
      LOG_ERROR("volume %s: new rates refused: %s", volume->name().c_str(), s.message().c_str());
      continue;
    }
    ++changed;
  }
  return changed;
}

void ConfigReloader::RemoveVolumes(std::shared_ptr<Outcome> outcome) {
  auto join = MakeJoin([this, alive = lifetime_.Watch(), outcome](int) {
    if (!alive.expired()) AddVolumes(outcome);
  });
  for (const std::string& name : outcome->plan.remove)
    RemoveVolume(server_, name, /*force=*/false, [outcome, name, part = Part(join)](Status s) {
      if (s.ok())
        ++outcome->removed;
      else
        outcome->failures.push_back("volume " + name + " not removed: " + s.message());
      part(0);
    });
  join->Arrive(0);
}

void ConfigReloader::AddVolumes(std::shared_ptr<Outcome> outcome) {
  auto join = MakeJoin([this, alive = lifetime_.Watch(), outcome](int) {
    if (!alive.expired()) Finish(*outcome);
  });
  for (VolumeConfig& v : outcome->plan.add) {
    if (!server_.volume_adder) {
      outcome->failures.push_back("volume " + v.name + " not added: volume add is not available");
      continue;
    }
    const std::string name = v.name;
    server_.volume_adder->Add(
        std::move(v), [outcome, name, part = Part(join)](Status s, const std::string&) {
          if (s.ok())
            ++outcome->added;
          else
            outcome->failures.push_back("volume " + name + " not added: " + s.message());
          part(0);
        });
  }
  join->Arrive(0);
}

void ConfigReloader::Finish(const Outcome& outcome) {
  busy_ = false;
  const std::string summary = std::to_string(outcome.added) + " added, " +
                              std::to_string(outcome.removed) + " removed, " +
                              std::to_string(outcome.changed) + " changed";
  if (outcome.failures.empty()) {
    LOG_INFO("reloaded: %s", summary.c_str());
    return outcome.done(Status::Ok(), summary);
  }
  std::string failures;
  for (const std::string& failure : outcome.failures)
    failures += (failures.empty() ? "" : "; ") + failure;
  LOG_WARNING("reload applied in part: %s; %s", summary.c_str(), failures.c_str());
  outcome.done(Status::Error(EIO, "reload applied in part (" + summary + "): " + failures), "");
}

}  // namespace dst::aggregator
