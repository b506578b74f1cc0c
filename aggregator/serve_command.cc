#include "aggregator/serve_command.h"

#include <string.h>  // explicit_bzero

#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>

#include "aggregator/command_error.h"
#include "aggregator/control/control_plane.h"
#include "aggregator/control/runtime.h"
#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/key_file.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member_add.h"
#include "aggregator/member_return.h"
#include "aggregator/redundant_serve.h"
#include "aggregator/server/fd_limit.h"
#include "aggregator/server/listener.h"
#include "aggregator/server/one_shot_server.h"
#include "aggregator/volume/set_geometry.h"
#include "aggregator/volume_remove.h"
#include "common/checksum.h"
#include "common/join.h"
#include "common/log.h"
#include "common/run_until.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(15);
// How long a stop waits for requests in flight and the final write-back.
constexpr auto kCloseTimeout = std::chrono::seconds(30);
using control::MemberRef;
using control::Server;

// What a volume's superblocks say, read before the event loop starts.
struct AssemblyPlan {
  std::vector<integrity::MemberSuperblock> members;  // linear, stripe: in member-index order
  std::optional<RedundantPlan> redundant;            // mirror, raid10
  std::vector<uint8_t> key;                          // empty unless keyed

  const integrity::Superblock& superblock() const {
    return redundant ? redundant->view : members[0].superblock;
  }
};

Status PlanLinearAssembly(const VolumeConfig& v, std::vector<integrity::MemberSuperblock> found,
                          const std::vector<UnreadMember>& unread, AssemblyPlan* plan) {
  if (!unread.empty()) return unread.front().why;
  const integrity::Superblock& sb = found.front().superblock;
  if (v.allow_degraded || v.discard_slot)
    return Status::Invalid("volume " + sb.name +
                           ": --allow-degraded and --discard are for mirror and raid10 volumes; "
                           "this one is " +
                           std::string(volume::LayoutKindName(sb.layout)));
  return integrity::OrderMembers(std::move(found), &plan->members);
}

// Reads every member's superblocks and checks that they make one volume (assembly.h); for
// mirror and raid10, decides which copies serve (redundant_serve.h), a member that cannot be
// read counting as missing.
Status PlanAssembly(const VolumeConfig& v, const member::MemberTls& tls, AssemblyPlan* plan) {
  std::vector<integrity::MemberSuperblock> found;
  std::vector<UnreadMember> unread;
  for (const std::string& uri : v.members) {
    integrity::MemberReadResult r;
    if (Status s = integrity::ReadSuperblocks(uri, tls, &r); !s.ok()) {
      unread.push_back({uri, s});
      continue;
    }
    if (!r.choice_status.ok())
      return Status::Error(r.choice_status.err(),
                           "member " + uri + ": " + r.choice_status.message() +
                               " (format it with dst-aggregator create, or serve it with --raw)");
    found.push_back({uri, r.choice.superblock});
  }
  if (found.empty()) return unread.front().why;
  if (volume::IsRedundant(found.front().superblock.layout)) {
    plan->redundant.emplace();
    DST_RETURN_IF_ERROR(
        PlanRedundantAssembly(v, std::move(found), std::move(unread), &*plan->redundant));
  } else {
    DST_RETURN_IF_ERROR(PlanLinearAssembly(v, std::move(found), unread, plan));
  }
  const integrity::Superblock& sb = plan->superblock();
  if (!v.name.empty() && v.name != sb.name)
    return Status::Invalid("volume " + v.name + ": the members belong to volume \"" + sb.name +
                           "\"");
  if (!v.key_file.empty()) DST_RETURN_IF_ERROR(ReadKeyFile(v.key_file, &plan->key));
  Status s = integrity::CheckChecksumKey(sb, plan->key);
  if (!s.ok() && !plan->key.empty()) explicit_bzero(plan->key.data(), plan->key.size());
  return s;
}

void LogAssembly(const AssemblyPlan& plan) {
  if (plan.redundant) return;  // PlanRedundantAssembly logs its slots
  const integrity::Superblock& sb = plan.members[0].superblock;
  uint64_t newest = 0, oldest = UINT64_MAX;
  for (const auto& m : plan.members) {
    newest = std::max(newest, m.superblock.event);
    oldest = std::min(oldest, m.superblock.event);
  }
  LOG_INFO("volume %s: assembled from %zu members (uuid %s, %s, checksum %s, %s blocks)",
           sb.name.c_str(), plan.members.size(), integrity::FormatUuid(sb.volume_uuid).c_str(),
           std::string(volume::LayoutKindName(sb.layout)).c_str(),
           ChecksumAlgorithmName(sb.geometry.params.algorithm),
           FormatSize(sb.geometry.params.block_size).c_str());
  if (oldest != newest)
    LOG_WARNING(
        "volume %s: members' superblocks are at events %llu to %llu: the last update "
        "did not reach every member",
        sb.name.c_str(), static_cast<unsigned long long>(oldest),
        static_cast<unsigned long long>(newest));
}

void WarnAboutUnfencedMembers(const ServeConfig& config, const Server& server) {
  if (config.transactions.fencing == member::FencingMode::kOff) {
    LOG_WARNING("fencing is off: a resent write is not protected against a stale first copy");
    return;
  }
  for (const MemberRef& ref : server.member_refs)
    if (!ref.member->fenced())
      LOG_WARNING(
          "volume %s: member %zu %s cannot fence (not a dst export node): a resent write "
          "is not protected against a stale first copy landing later",
          ref.volume.c_str(), ref.index, ref.member->name().c_str());
}

// The members of every volume, in the order the volume uses them (by slot for mirror and raid10,
// nullptr for a missing one), connected.
Status ConnectMembers(const ServeConfig& config, const std::vector<AssemblyPlan>& plans,
                      Server& server, std::vector<std::vector<volume::MemberTarget*>>* targets) {
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    const VolumeConfig& v = config.volumes[i];
    const AssemblyPlan& plan = plans[i];
    std::vector<std::optional<std::string>> uris(v.members.begin(), v.members.end());
    std::string name = v.name;
    if (plan.redundant) {
      uris.clear();
      for (const auto& m : plan.redundant->slots)
        uris.push_back(m ? std::optional(m->uri) : std::nullopt);
      name = plan.redundant->name;
    } else if (!v.IsRaw(config.raw)) {
      uris.clear();
      for (const auto& m : plan.members)
        uris.push_back(m.uri);
      name = plan.members[0].superblock.name;
    }
    targets->emplace_back();
    for (const auto& uri : uris) {
      if (!uri) {
        targets->back().push_back(nullptr);
        continue;
      }
      const uint32_t slot = static_cast<uint32_t>(targets->back().size());
      const member::TransactionOptions options =
          plan.redundant ? RedundantMemberOptions(config, *plan.redundant, slot)
                         : config.transactions;
      server.members.push_back(std::make_unique<member::NbdMember>(
          server.io, *uri, config.connections_per_member, options, config.member_tls));
      server.member_refs.push_back({name, i, targets->back().size(), server.members.back().get()});
      targets->back().push_back(server.members.back().get());
    }
  }
  return member::NbdMember::ConnectAll(server.io, server.members, kConnectTimeout);
}

Status BuildRawVolume(const VolumeConfig& v, const std::vector<volume::MemberTarget*>& targets,
                      std::unique_ptr<volume::BlockDevice>* out) {
  std::unique_ptr<volume::Volume> volume;
  DST_RETURN_IF_ERROR(
      volume::Volume::Create(v.name, v.description, v.layout, v.chunk_size, targets, &volume));
  LOG_INFO("volume %s: %s, %zu members, %s", v.name.c_str(),
           std::string(volume::LayoutKindName(v.layout)).c_str(), v.members.size(),
           FormatSize(volume->size()).c_str());
  for (size_t m = 0; m < v.members.size(); ++m)
    LOG_INFO("volume %s: member %zu %s: %s used of %s%s", v.name.c_str(), m, v.members[m].c_str(),
             FormatSize(volume->layout().member_usable_size(m)).c_str(),
             FormatSize(targets[m]->capabilities().size).c_str(),
             targets[m]->capabilities().read_only ? " (read-only)" : "");
  *out = std::move(volume);
  return Status::Ok();
}

// The volume as its slots take new members while it serves: each with the transaction options
// its slot got at start.
SlotVolume SlotsOf(const ServeConfig& config, const RedundantPlan& plan,
                   integrity::ChecksummedVolume& volume, const Server& server) {
  SlotVolume slots{.volume = &volume, .volume_index = server.volumes.size(), .options = {}};
  for (uint32_t slot = 0; slot < plan.slots.size(); ++slot)
    slots.options.push_back(RedundantMemberOptions(config, plan, slot));
  return slots;
}

// The volume's members that are out (missing at start, demoted later) come back while it serves.
void WatchForReturns(const SlotVolume& slots, const RedundantPlan& plan, Server& server) {
  ReturnWatcher::WatchedVolume watched;
  static_cast<SlotVolume&>(watched) = slots;
  for (const auto& m : plan.slots)
    watched.uris.push_back(m ? std::optional(m->uri) : std::nullopt);
  for (const UnreadMember& m : plan.unread)
    watched.unread.push_back(m.uri);
  server.returns->AddVolume(std::move(watched));
}

Status BuildChecksummedVolume(const ServeConfig& config, const VolumeConfig& v, AssemblyPlan& plan,
                              const std::vector<volume::MemberTarget*>& targets, Server& server) {
  integrity::ChecksumOptions options;
  options.table_cache_bytes = config.table_cache;
  options.background.limits = {.min_bytes_per_second = config.resync_rate_min,
                               .max_bytes_per_second = config.resync_rate_max};
  options.description = v.description;
  std::unique_ptr<integrity::ChecksummedVolume> volume;
  Status s;
  if (plan.redundant) {
    s = BuildRedundantVolume(server.io, *plan.redundant, targets, plan.key, options, v.auto_resync,
                             &volume);
  } else {
    std::vector<integrity::Superblock> superblocks;
    for (const auto& m : plan.members)
      superblocks.push_back(m.superblock);
    s = integrity::ChecksummedVolume::Create(server.io, targets, std::move(superblocks), plan.key,
                                             options, &volume)
            .Wrap("volume " + plan.members[0].superblock.name);
  }
  if (!plan.key.empty()) explicit_bzero(plan.key.data(), plan.key.size());
  DST_RETURN_IF_ERROR(s);
  LOG_INFO("volume %s: %s of data, table cache %s", volume->name().c_str(),
           FormatSize(volume->size()).c_str(), FormatSize(config.table_cache).c_str());
  server.checksummed.push_back(volume.get());
  if (plan.redundant) {
    const SlotVolume slots = SlotsOf(config, *plan.redundant, *volume, server);
    if (v.auto_resync) WatchForReturns(slots, *plan.redundant, server);
    server.adder->AddVolume(slots);  // member add
  }
  // A member fenced out by a newer owner stops the volume's writes, before its I/O completes.
  if (plan.redundant)
    for (uint32_t slot = 0; slot < targets.size(); ++slot)
      if (auto* member = dynamic_cast<member::NbdMember*>(targets[slot]))
        member->OnSuperseded([v = volume.get(), slot] { v->Supersede(slot); });
  server.volumes.push_back(std::move(volume));
  return Status::Ok();
}

Status BuildVolumes(const ServeConfig& config, Server& server) {
  server.returns = std::make_unique<ReturnWatcher>(
      server, ReturnWatcher::Settings{.interval = config.return_probe_interval,
                                      .connections = config.connections_per_member,
                                      .tls = config.member_tls});
  server.adder = std::make_unique<MemberAdder>(
      server, MemberAdder::Settings{.connections = config.connections_per_member,
                                    .tls = config.member_tls});
  server.add_member = [adder = server.adder.get()](
                          integrity::ChecksummedVolume& volume, const std::string& uri,
                          std::optional<uint32_t> slot, MemberAdder::Done done) {
    adder->Add(volume, uri, slot, std::move(done));
  };
  server.replace_member = [adder = server.adder.get()](integrity::ChecksummedVolume& volume,
                                                       uint32_t slot, const std::string& uri,
                                                       std::function<void(Status)> done) {
    adder->Replace(volume, slot, uri,
                   [done = std::move(done)](Status s, uint32_t) { done(std::move(s)); });
  };
  server.remove_volume = [&server](const std::string& name, bool force,
                                   std::function<void(Status)> done) {
    RemoveVolume(server, name, force, std::move(done));
  };
  std::vector<AssemblyPlan> plans(config.volumes.size());
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    if (config.volumes[i].IsRaw(config.raw)) continue;
    DST_RETURN_IF_ERROR(PlanAssembly(config.volumes[i], config.member_tls, &plans[i]));
    LogAssembly(plans[i]);
    // Durable before the first fenced connection carries the new epoch: an aggregator that
    // assembles the volume later reads it and goes one above.
    if (plans[i].redundant)
      DST_RETURN_IF_ERROR(ClaimOwnership(config.member_tls, RunOwnerUuid(), &*plans[i].redundant));
  }
  std::vector<std::vector<volume::MemberTarget*>> targets;
  DST_RETURN_IF_ERROR(ConnectMembers(config, plans, server, &targets));
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    const VolumeConfig& v = config.volumes[i];
    if (!v.IsRaw(config.raw)) {
      DST_RETURN_IF_ERROR(BuildChecksummedVolume(config, v, plans[i], targets[i], server));
      continue;
    }
    std::unique_ptr<volume::BlockDevice> volume;
    DST_RETURN_IF_ERROR(BuildRawVolume(v, targets[i], &volume));
    server.volumes.push_back(std::move(volume));
  }
  for (const auto& volume : server.volumes) {
    if (server.registry.Find(volume->name()))
      return Status::Invalid("duplicate volume name '" + volume->name() + "'");
    server.registry.Add(volume.get());
  }
  server.registry.SetDefault(config.default_volume);
  WarnAboutUnfencedMembers(config, server);
  return Status::Ok();
}

// Runs the event loop until every checksummed volume has finished `step` (Open or Close), or
// `timeout` passes. Returns the first error.
template <typename Step>
int RunOnEveryVolume(Server& server, Step step, std::chrono::milliseconds timeout) {
  // Shared with the parts, which may arrive after a timeout returned.
  auto result = std::make_shared<std::optional<int>>();
  auto join = MakeJoin([result](int err) { *result = err; });
  for (integrity::ChecksummedVolume* v : server.checksummed)
    step(*v, Part(join));
  join->Arrive(0);
  join.reset();
  const RunResult run = RunUntil(
      server.io, [&result] { return result->has_value(); }, timeout);
  if (result->has_value()) return **result;
  return run == RunResult::kTimedOut ? ETIMEDOUT : ECANCELED;
}

// Descriptors for everything but client connections: stdio, the event loop's own, listeners, the
// control and metrics servers with their clients, and every member connection twice over (a
// reconnect opens the new connection before the old one is gone). server::kSpareDescriptors
// come on top.
uint64_t ReservedFiles(const ServeConfig& config) {
  uint64_t members = 0;
  for (const VolumeConfig& v : config.volumes)
    members += v.members.size();
  return 8 + config.listen.size() + config.unix_sockets.size() +
         2 * (server::OneShotServer::kMaxConnections + 1) +
         2 * members * config.connections_per_member;
}

// TLS credentials are loaded before any member is contacted, so that a bad
// key file fails the start at once.
Status SetUpClientPolicy(const ServeConfig& config, Server& server) {
  if (config.tls.mode != server::TlsMode::kOff) {
    DST_RETURN_IF_ERROR(server::ServerTls::Create(config.tls, &server.tls));
    LOG_INFO("clients: TLS %s (%s)", server::TlsModeName(config.tls.mode),
             config.tls.psk_file.empty() ? "X.509" : "PSK");
  }
  server.policy.tls = server.tls.get();
  server.policy.max_connections = config.max_connections;
  server.policy.max_connections_per_address = config.max_connections_per_address;
  server.policy.handshake_timeout = config.handshake_timeout;
  server.policy.request_timeout = config.request_timeout;
  return Status::Ok();
}

}  // namespace

int Serve(ServeConfig config) {
  if (Status s = ValidateServeConfig(config); !s.ok()) return ExitWithError(s);
  if (Status s = server::EnsureFileLimit(config.max_connections, ReservedFiles(config)); !s.ok())
    return ExitWithError(s);
  Server server;
  server.limits.per_connection = config.max_inflight_per_client;
  server.limits.total = config.max_inflight_total;
  if (Status s = SetUpClientPolicy(config, server); !s.ok()) return ExitWithError(s);
  if (Status s = BuildVolumes(config, server); !s.ok()) return ExitWithError(s);
  // Assembled volumes are opened (and recovered) before any client can connect.
  const int open_err = RunOnEveryVolume(
      server, [](integrity::ChecksummedVolume& v, auto done) { v.Open(done); },
      std::chrono::hours(24 * 365));
  if (open_err != 0)
    return ExitWithError(
        Status::Error(open_err, std::string("opening volumes: ") + std::strerror(open_err)));
  // The control socket first: a second aggregator started by mistake on the
  // same paths fails here, before it touches anything of the first one's.
  if (Status s = control::StartControl(server, config.control); !s.ok()) return ExitWithError(s);
  server.listener =
      std::make_unique<server::Listener>(server.io, server.registry, server.limits, server.policy);
  for (const std::string& address : config.listen)
    if (Status s = server.listener->ListenTcp(address); !s.ok()) return ExitWithError(s);
  for (const std::string& path : config.unix_sockets)
    if (Status s = server.listener->ListenUnix(path); !s.ok()) return ExitWithError(s);
  if (Status s = control::StartMetrics(server, config.metrics); !s.ok()) return ExitWithError(s);
  asio::signal_set signals(server.io, SIGINT, SIGTERM);
  signals.async_wait([&server](const asio::error_code& ec, int signo) {
    if (ec) return;
    LOG_INFO("signal %d: stopping", signo);
    server.io.stop();
  });
  control::StatsLogger stats(server, config.stats_interval);
  // SIGHUP, which log rotation sends, must not kill a server that logs to
  // stderr: the supervisor (systemd, a pipe) owns that stream.
  asio::signal_set hup(server.io, SIGHUP);
  std::function<void()> await_hup = [&hup, &await_hup] {
    hup.async_wait([&await_hup](const asio::error_code& ec, int) {
      if (ec) return;
      LOG_INFO("SIGHUP: logs go to stderr, nothing to reopen");
      await_hup();
    });
  };
  await_hup();
  LOG_INFO("serving %zu volume(s)", server.volumes.size());
  server.returns->Start();
  server.io.run();
  // Nothing comes back once the volumes begin to close.
  server.returns->Stop();
  server.adder->Stop();
  // Clients get ESHUTDOWN from here on; what is in flight finishes, then the checksums are
  // written back and the volumes marked clean.
  server.listener->Close();
  if (server.metrics) server.metrics->Close();
  const int close_err = RunOnEveryVolume(
      server, [](integrity::ChecksummedVolume& v, auto done) { v.Close(done); }, kCloseTimeout);
  if (server.control) server.control->Close();  // status answers until the volumes are closed
  if (close_err != 0) {
    LOG_ERROR("stopping: volumes not closed clean: %s", std::strerror(close_err));
    return 1;
  }
  return 0;
}

int RunServe(const ServeArgs& args) {
  if (args.verbose) SetLogLevel(LogLevel::kDebug);
  ServeConfig config;
  if (Status s = ServeConfigFromArgs(args, &config); !s.ok()) return ExitWithError(s);
  if (args.check_config) {
    if (Status s = CheckServeConfig(config); !s.ok()) return ExitWithError(s);
    std::printf("configuration OK: %zu volume(s)\n", config.volumes.size());
    return 0;
  }
  return Serve(std::move(config));
}

}  // namespace dst::aggregator
