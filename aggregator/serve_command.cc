#include "aggregator/serve_command.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>

#include "aggregator/command_error.h"
#include "aggregator/config_reloader.h"
#include "aggregator/control/control_plane.h"
#include "aggregator/control/runtime.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/key_add.h"
#include "aggregator/loop_volumes.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member_add.h"
#include "aggregator/member_return.h"
#include "aggregator/redundant_serve.h"
#include "aggregator/server/fd_limit.h"
#include "aggregator/server/listener.h"
#include "aggregator/server/one_shot_server.h"
#include "aggregator/volume_add.h"
#include "aggregator/volume_build.h"
#include "aggregator/volume_remove.h"
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
    std::string name;
    const auto uris = OrderedMemberUris(v, v.IsRaw(config.raw), plan, &name);
    targets->emplace_back();
    for (const auto& uri : uris) {
      if (!uri) {
        targets->back().push_back(nullptr);
        continue;
      }
      const uint32_t slot = static_cast<uint32_t>(targets->back().size());
      const member::TransactionOptions options = MemberOptions(config, plan, slot);
      server.members.push_back(std::make_unique<member::NbdMember>(
          server.io, *uri, config.connections_per_member, options, config.member_tls));
      server.member_refs.push_back(
          {name, i, targets->back().size(), server.members.back().get(), {}});
      targets->back().push_back(server.members.back().get());
    }
  }
  return member::NbdMember::ConnectAll(server.io, server.members, kConnectTimeout);
}

// `staged`: the volumes served through a staging log, to start once the volumes are open and to
// close (destage) before they close.
Status BuildVolumes(const ServeConfig& config, Server& server,
                    std::vector<stagelog::StagedDevice*>* staged) {
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
  server.key_adder = std::make_unique<KeyAdder>(server.io);
  server.add_key = [adder = server.key_adder.get()](integrity::ChecksummedVolume& volume,
                                                    KeySlotKind kind, const std::string& path,
                                                    uint8_t cost, KeyAdder::Done done) {
    adder->Add(volume, kind, path, cost, std::move(done));
  };
  server.volume_adder = std::make_unique<VolumeAdder>(server, config);
  server.add_volume = [adder = server.volume_adder.get()](const std::vector<std::string>& words,
                                                          VolumeAdder::Done done) {
    VolumeConfig volume;
    if (Status s = ParseVolumeAdd(words, &volume); !s.ok()) return done(s, "");
    adder->Add(std::move(volume), std::move(done));
  };
  std::vector<AssemblyPlan> plans(config.volumes.size());
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    if (config.volumes[i].IsRaw(config.raw)) continue;
    DST_RETURN_IF_ERROR(PlanAssembly(config.volumes[i], config.member_tls, &plans[i]));
    LogAssembly(plans[i]);
    // Durable before the first fenced connection carries the new epoch: an aggregator that
    // assembles the volume later reads it and goes one above.
    if (plans[i].redundant)
      DST_RETURN_IF_ERROR(ClaimOwnership(config.member_tls, RunOwnerUuid(), &*plans[i].redundant,
                                         config.volumes[i].min_ownership_epoch));
  }
  std::vector<std::vector<volume::MemberTarget*>> targets;
  DST_RETURN_IF_ERROR(ConnectMembers(config, plans, server, &targets));
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    const VolumeConfig& v = config.volumes[i];
    if (!v.IsRaw(config.raw)) {
      std::unique_ptr<integrity::ChecksummedVolume> volume;
      DST_RETURN_IF_ERROR(MakeChecksummedVolume(config, v, plans[i], targets[i], server.io,
                                                server.workers.get(), &volume));
      InstallChecksummedVolume(config, v, plans[i], targets[i], std::move(volume), server);
      if (!v.log_path.empty()) {
        staged->push_back(nullptr);
        DST_RETURN_IF_ERROR(StageVolume(v, plans[i].superblock().volume_uuid, server.io,
                                        &server.volumes.back(), &staged->back()));
      }
      continue;
    }
    std::unique_ptr<volume::BlockDevice> volume;
    DST_RETURN_IF_ERROR(BuildRawVolume(v, targets[i], &volume));
    // A raw volume has no UUID: its log is tied to its name.
    if (!v.log_path.empty()) {
      staged->push_back(nullptr);
      DST_RETURN_IF_ERROR(
          StageVolume(v, stagelog::RawVolumeLogUuid(v.name), server.io, &volume, &staged->back()));
    }
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

// Runs the event loop until `step` (an Open or Close with a Done) has finished on every one of
// `items`, or `timeout` passes. Returns the first error.
template <typename Items, typename Step>
int RunOnEach(Server& server, const Items& items, Step step, std::chrono::milliseconds timeout) {
  // Shared with the parts, which may arrive after a timeout returned.
  auto result = std::make_shared<std::optional<int>>();
  auto join = MakeJoin([result](int err) { *result = err; });
  for (auto* item : items)
    step(*item, Part(join));
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
  // Each loop but home has its own connections to the members of raw volumes (loop_volumes.h).
  const uint64_t loops = std::max<uint64_t>(config.threads, 1);
  return 8 + config.listen.size() + config.unix_sockets.size() +
         2 * (server::OneShotServer::kMaxConnections + 1) +
         2 * members * config.connections_per_member * loops;
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

// Stops the event loops other than home when Serve returns, however it returns, before the
// Server is destroyed: their threads run connections that post to the home loop.
class StopLoopsOnReturn {
 public:
  explicit StopLoopsOnReturn(Server& server) : server_(server) {}
  ~StopLoopsOnReturn() {
    if (server_.loops) server_.loops->Stop();
  }

 private:
  Server& server_;
};

// Client connections spread over `threads` loops; the volumes stay on the home loop.
void StartEventLoops(const ServeConfig& config, Server& server) {
  server.event_loops = static_cast<unsigned>(config.threads);
  if (config.threads <= 1) return;
  server.loops = std::make_unique<server::EventLoops>(server.io, config.threads - 1);
  server.policy.home = server.io.get_executor();
}

// Each loop but home gets its own copy of the raw volumes that allow it (loop_volumes.h), built
// once the server has started: a start that fails opens no more member connections than it must.
void CopyVolumesToLoops(const ServeConfig& config, Server& server) {
  if (!server.loops) return;
  server.loop_volumes = std::make_unique<LoopVolumes>(
      server, LoopVolumes::Settings{.connections = config.connections_per_member,
                                    .transactions = config.transactions,
                                    .tls = config.member_tls});
  for (const VolumeConfig& v : config.volumes) {
    if (!v.IsRaw(config.raw) || !v.log_path.empty()) continue;
    for (const auto& served : server.volumes)
      if (auto* raw = dynamic_cast<volume::Volume*>(served.get()); raw && raw->name() == v.name)
        server.loop_volumes->Replicate(*raw, v);
  }
}

}  // namespace

int Serve(ServeConfig config, ServeArgs args) {
  return Serve(std::move(config), std::move(args), {});
}

int Serve(ServeConfig config, ServeArgs args, ServeHooks hooks) {
  if (Status s = ValidateServeConfig(config); !s.ok()) return ExitWithError(s);
  if (Status s = server::EnsureFileLimit(config.max_connections, ReservedFiles(config)); !s.ok())
    return ExitWithError(s);
  Server server;
  const StopLoopsOnReturn stop_loops(server);
  // Each event loop counts its own connections' traffic (server/volume_traffic.h).
  server.registry = server::ExportRegistry(std::max<size_t>(config.threads, 1));
  server.limits.per_connection = config.max_inflight_per_client;
  server.limits.total = config.max_inflight_total;
  if (Status s = SetUpClientPolicy(config, server); !s.ok()) return ExitWithError(s);
  if (config.workers > 0) server.workers = std::make_unique<WorkerPool>(config.workers);
  std::vector<stagelog::StagedDevice*> staged;
  if (Status s = BuildVolumes(config, server, &staged); !s.ok()) return ExitWithError(s);
  ConfigReloader reloader(server, std::move(args), config);
  server.reload = [&reloader](ConfigReloader::Done done) { reloader.Reload(std::move(done)); };
  // Assembled volumes are opened (and recovered) before any client can connect.
  const int open_err = RunOnEach(
      server, server.checksummed, [](integrity::ChecksummedVolume& v, auto done) { v.Open(done); },
      std::chrono::hours(24 * 365));
  if (open_err != 0)
    return ExitWithError(
        Status::Error(open_err, std::string("opening volumes: ") + std::strerror(open_err)));
  // The volumes are open: what their logs hold after D goes to them first, in order.
  for (stagelog::StagedDevice* d : staged)
    d->Start();
  // The control socket first: a second aggregator started by mistake on the
  // same paths fails here, before it touches anything of the first one's.
  if (Status s = control::StartControl(server, config.control); !s.ok()) return ExitWithError(s);
  StartEventLoops(config, server);
  server.listener = std::make_unique<server::Listener>(server.io, server.registry, server.limits,
                                                       server.policy, server.loops.get());
  for (const std::string& address : config.listen)
    if (Status s = server.listener->ListenTcp(address); !s.ok()) return ExitWithError(s);
  for (const std::string& path : config.unix_sockets)
    if (Status s = server.listener->ListenUnix(path); !s.ok()) return ExitWithError(s);
  server.client_tcp = config.listen;
  server.client_unix = config.unix_sockets;
  server.retry_window = config.transactions.retry_window;
  if (Status s = control::StartMetrics(server, config.metrics); !s.ok()) return ExitWithError(s);
  asio::signal_set signals(server.io, SIGINT, SIGTERM);
  signals.async_wait([&server](const asio::error_code& ec, int signo) {
    if (ec) return;
    LOG_INFO("signal %d: stopping", signo);
    server.io.stop();
  });
  control::StatsLogger stats(server, config.stats_interval);
  // SIGHUP reloads the configuration file, as `reload` does; the reloader logs the outcome. Logs
  // go to stderr, which the supervisor (systemd, a pipe) owns: nothing to reopen.
  asio::signal_set hup(server.io, SIGHUP);
  std::function<void()> await_hup = [&hup, &await_hup, &reloader] {
    hup.async_wait([&await_hup, &reloader](const asio::error_code& ec, int) {
      if (ec) return;
      LOG_INFO("SIGHUP: reloading the configuration");
      reloader.Reload([](Status, const std::string&) {});
      await_hup();
    });
  };
  await_hup();
  if (server.workers && !server.checksummed.empty())
    LOG_INFO(
        "workers: %zu threads checksum, encrypt and decrypt requests of %s or more "
        "(crc32c: %s)",
        server.workers->size(), FormatSize(integrity::kWorkerMinBytes).c_str(),
        FormatSize(integrity::kWorkerMinBytesCrc32c).c_str());
  LOG_INFO("serving %zu volume(s) on %u event loop(s)", server.volumes.size(), server.event_loops);
  CopyVolumesToLoops(config, server);
  server.returns->Start();
  const std::shared_ptr<void> hooked = hooks.serving ? hooks.serving(server) : nullptr;
  server.io.run();
  // Nothing comes back once the volumes begin to close.
  server.returns->Stop();
  server.adder->Stop();
  server.volume_adder->Stop();
  server.key_adder->Stop();
  reloader.Stop();
  // Clients get ESHUTDOWN from here on; what is in flight finishes, then the checksums are
  // written back and the volumes marked clean.
  server.listener->Close();
  if (server.metrics) server.metrics->Close();
  // Everything the logs hold goes to the volumes before they close (within kCloseTimeout; what
  // is left stays in the log for the next start).
  const int destage_err = RunOnEach(
      server, staged, [](stagelog::StagedDevice& d, auto done) { d.Close(done); }, kCloseTimeout);
  for (stagelog::StagedDevice* d : staged)
    d->Stop();
  if (destage_err != 0)
    LOG_WARNING(
        "stopping: staging logs not fully destaged (%s): the rest is destaged at the next "
        "start",
        std::strerror(destage_err));
  const int close_err = RunOnEach(
      server, server.checksummed, [](integrity::ChecksummedVolume& v, auto done) { v.Close(done); },
      kCloseTimeout);
  if (server.control) server.control->Close();  // status answers until the volumes are closed
  if (close_err != 0) {
    LOG_ERROR("stopping: volumes not closed clean: %s", std::strerror(close_err));
    // What each volume still waited for, and its members' counters, for whoever reads this.
    if (close_err == ETIMEDOUT) {
      for (const integrity::ChecksummedVolume* v : server.checksummed)
        LOG_ERROR("stopping: volume %s: %s", v->name().c_str(), v->CloseProgress().c_str());
      stats.LogNow();
    }
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
  return Serve(std::move(config), args);
}

}  // namespace dst::aggregator
