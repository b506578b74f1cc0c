#include "aggregator/serve_command.h"

#include <string.h>  // explicit_bzero

#include <csignal>
#include <cstdio>
#include <memory>

#include "aggregator/command_error.h"
#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/key_file.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/server/listener.h"
#include "aggregator/server/one_shot_server.h"
#include "aggregator/status_report.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(15);
// How long a stop waits for requests in flight and the final write-back.
constexpr auto kCloseTimeout = std::chrono::seconds(30);
// A control or metrics client gets this long to ask and be answered.
constexpr auto kQueryTimeout = std::chrono::seconds(5);
constexpr size_t kMaxControlRequest = 256;
constexpr size_t kMaxHttpRequest = 8192;

// A member as the stats lines name it.
struct MemberRef {
  std::string volume;
  size_t index;
  const member::NbdMember* member;
};

// What a volume's superblocks say, read before the event loop starts.
struct AssemblyPlan {
  std::vector<integrity::MemberSuperblock> members;  // in member-index order
  std::vector<uint8_t> key;                          // empty unless keyed
};

// Everything a running server owns; destroyed in reverse order.
struct Server {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // Before io: connections still queued in io when it is destroyed count
  // themselves out of the policy.
  std::unique_ptr<server::ServerTls> tls;
  server::ConnectionPolicy policy;
  asio::io_context io{1};
  std::vector<std::unique_ptr<member::NbdMember>> members;
  std::vector<MemberRef> member_refs;
  std::vector<std::unique_ptr<volume::BlockDevice>> volumes;
  std::vector<integrity::ChecksummedVolume*> checksummed;
  server::ExportRegistry registry;
  server::InFlightLimits limits;
  std::unique_ptr<server::Listener> listener;
  std::unique_ptr<server::OneShotServer> control;
  std::unique_ptr<server::OneShotServer> metrics;
};

// Reads every member's superblocks and checks that they make one volume (assembly.h).
Status PlanAssembly(const VolumeConfig& v, const member::MemberTls& tls, AssemblyPlan* plan) {
  std::vector<integrity::MemberSuperblock> found;
  for (const std::string& uri : v.members) {
    integrity::MemberReadResult r;
    DST_RETURN_IF_ERROR(integrity::ReadSuperblocks(uri, tls, &r));
    if (!r.choice_status.ok())
      return Status::Error(r.choice_status.err(),
                           "member " + uri + ": " + r.choice_status.message() +
                               " (format it with dst-aggregator create, or serve it with --raw)");
    found.push_back({uri, r.choice.superblock});
  }
  DST_RETURN_IF_ERROR(integrity::OrderMembers(std::move(found), &plan->members));
  const integrity::Superblock& sb = plan->members[0].superblock;
  if (!v.name.empty() && v.name != sb.name)
    return Status::Invalid("volume " + v.name + ": the members belong to volume \"" + sb.name +
                           "\"");
  if (!v.key_file.empty()) DST_RETURN_IF_ERROR(ReadKeyFile(v.key_file, &plan->key));
  Status s = integrity::CheckChecksumKey(sb, plan->key);
  if (!s.ok() && !plan->key.empty()) explicit_bzero(plan->key.data(), plan->key.size());
  return s;
}

void LogAssembly(const AssemblyPlan& plan) {
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

void LogStats(const Server& server) {
  for (const MemberRef& ref : server.member_refs)
    LOG_INFO("stats: volume %s member %zu %s: %s", ref.volume.c_str(), ref.index,
             ref.member->name().c_str(), ref.member->StatsLine().c_str());
  for (const integrity::ChecksummedVolume* v : server.checksummed)
    LOG_INFO("stats: volume %s integrity: %s", v->name().c_str(), v->StatsLine().c_str());
}

// A stats line per member on every SIGUSR1.
void LogStatsOnSignal(const Server& server, asio::signal_set& usr1) {
  usr1.async_wait([&server, &usr1](const asio::error_code& ec, int) {
    if (ec) return;
    LogStats(server);
    LogStatsOnSignal(server, usr1);
  });
}

// ... and every `interval`.
void LogStatsEvery(const Server& server, asio::steady_timer& timer,
                   std::chrono::milliseconds interval) {
  timer.expires_after(interval);
  timer.async_wait([&server, &timer, interval](const asio::error_code& ec) {
    if (ec) return;
    LogStats(server);
    LogStatsEvery(server, timer, interval);
  });
}

StatusReport BuildReport(const Server& server) {
  StatusReport report;
  report.uptime_seconds =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::steady_clock::now() - server.started)
                                .count());
  for (const auto& volume : server.volumes) {
    VolumeStatus v;
    v.name = volume->name();
    v.size = volume->size();
    v.traffic = server.registry.TrafficOf(volume.get());
    for (const integrity::ChecksummedVolume* c : server.checksummed) {
      if (c != volume.get()) continue;
      const integrity::Superblock& sb = c->superblock(0);
      v.checksummed = true;
      v.layout = std::string(volume::LayoutKindName(sb.layout));
      v.members = sb.member_count;
      v.integrity = IntegrityStatus{std::string(integrity::VolumeStateName(sb.state)),
                                    ChecksumAlgorithmName(sb.geometry.params.algorithm),
                                    c->counters(),
                                    c->dirty_regions(),
                                    c->table_pages(),
                                    c->table_dirty_pages()};
    }
    if (!v.checksummed) {
      const auto* raw = static_cast<const volume::Volume*>(volume.get());
      v.layout = std::string(volume::LayoutKindName(raw->layout().kind()));
      v.members = raw->members().size();
    }
    report.volumes.push_back(std::move(v));
  }
  for (const MemberRef& ref : server.member_refs) {
    const member::NbdMember& m = *ref.member;
    uint64_t checksum_errors = 0;
    for (const integrity::ChecksummedVolume* c : server.checksummed)
      if (c->name() == ref.volume) checksum_errors = c->member_checksum_errors(ref.index);
    report.members.push_back({ref.volume, ref.index, m.name(),
                              std::string(member::MemberStateName(m.state())), m.fenced(),
                              m.epoch(), m.connection_count(), m.in_flight(), m.counters(),
                              checksum_errors});
  }
  return report;
}

// The control socket's one command: "status" (a table) or "status json".
std::string AnswerControl(const Server& server, const std::string& request) {
  std::string command = request;
  while (!command.empty() && (command.back() == '\r' || command.back() == ' '))
    command.pop_back();
  if (command == "status") return StatusToText(BuildReport(server));
  if (command == "status json") return StatusToJson(BuildReport(server));
  return "error: unknown command '" + command + "' (expected: status, status json)\n";
}

std::string HttpResponse(const std::string& status, const std::string& type,
                         const std::string& body) {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

// GET /metrics in the Prometheus text format; anything else is refused.
std::string AnswerMetrics(const Server& server, const std::string& request) {
  const std::string line = request.substr(0, request.find("\r\n"));
  if (line.rfind("GET ", 0) != 0)
    return HttpResponse("405 Method Not Allowed", "text/plain", "only GET\n");
  const size_t path_end = line.find(' ', 4);
  const std::string path = line.substr(4, path_end == std::string::npos ? path_end : path_end - 4);
  if (path != "/metrics" && path.rfind("/metrics?", 0) != 0)
    return HttpResponse("404 Not Found", "text/plain", "metrics are at /metrics\n");
  return HttpResponse("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                      StatusToPrometheus(BuildReport(server)));
}

// The control socket at its path; the default path is given up with a
// warning when another aggregator holds it, a path asked for is not.
Status StartControl(const ServeConfig& config, Server& server) {
  if (config.control == "none") return Status::Ok();
  const bool defaulted = config.control.empty();
  const std::string path = defaulted ? DefaultControlPath() : config.control;
  server.control = std::make_unique<server::OneShotServer>(
      server.io, "\n", kMaxControlRequest, kQueryTimeout,
      [&server](const std::string& request) { return AnswerControl(server, request); });
  Status s = server.control->ListenUnix(path, 0600);
  if (!s.ok() && defaulted) {
    LOG_WARNING("%s: no control socket (give one with --control PATH)", s.message().c_str());
    server.control.reset();
    return Status::Ok();
  }
  if (s.ok()) LOG_INFO("control socket %s", path.c_str());
  return s;
}

Status StartMetrics(const ServeConfig& config, Server& server) {
  if (config.metrics.empty()) return Status::Ok();
  server.metrics = std::make_unique<server::OneShotServer>(
      server.io, "\r\n\r\n", kMaxHttpRequest, kQueryTimeout,
      [&server](const std::string& request) { return AnswerMetrics(server, request); });
  DST_RETURN_IF_ERROR(server.metrics->ListenTcp(config.metrics).Wrap("--metrics"));
  LOG_INFO("metrics on http://%s/metrics", config.metrics.c_str());
  return Status::Ok();
}

// The members of every volume, in the order the volume uses them, connected.
Status ConnectMembers(const ServeConfig& config, const std::vector<AssemblyPlan>& plans,
                      Server& server, std::vector<std::vector<volume::MemberTarget*>>* targets) {
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    const VolumeConfig& v = config.volumes[i];
    std::vector<std::string> uris = v.members;
    std::string name = v.name;
    if (!v.IsRaw(config.raw)) {
      uris.clear();
      for (const auto& m : plans[i].members)
        uris.push_back(m.uri);
      name = plans[i].members[0].superblock.name;
    }
    targets->emplace_back();
    for (const std::string& uri : uris) {
      server.members.push_back(std::make_unique<member::NbdMember>(
          server.io, uri, config.connections_per_member, config.transactions, config.member_tls));
      server.member_refs.push_back({name, targets->back().size(), server.members.back().get()});
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

Status BuildChecksummedVolume(const ServeConfig& config, const VolumeConfig& v, AssemblyPlan& plan,
                              const std::vector<volume::MemberTarget*>& targets, Server& server) {
  std::vector<integrity::Superblock> superblocks;
  for (const auto& m : plan.members)
    superblocks.push_back(m.superblock);
  integrity::ChecksumOptions options;
  options.table_cache_bytes = config.table_cache;
  options.description = v.description;
  std::unique_ptr<integrity::ChecksummedVolume> volume;
  Status s = integrity::ChecksummedVolume::Create(server.io, targets, std::move(superblocks),
                                                  plan.key, options, &volume);
  if (!plan.key.empty()) explicit_bzero(plan.key.data(), plan.key.size());
  DST_RETURN_IF_ERROR(s.Wrap("volume " + plan.members[0].superblock.name));
  LOG_INFO("volume %s: %s of data, table cache %s", volume->name().c_str(),
           FormatSize(volume->size()).c_str(), FormatSize(config.table_cache).c_str());
  server.checksummed.push_back(volume.get());
  server.volumes.push_back(std::move(volume));
  return Status::Ok();
}

Status BuildVolumes(const ServeConfig& config, Server& server) {
  std::vector<AssemblyPlan> plans(config.volumes.size());
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    if (config.volumes[i].IsRaw(config.raw)) continue;
    DST_RETURN_IF_ERROR(PlanAssembly(config.volumes[i], config.member_tls, &plans[i]));
    LogAssembly(plans[i]);
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
  struct Progress {
    size_t pending = 0;
    int error = 0;
    bool timed_out = false;
  };
  auto progress = std::make_shared<Progress>();
  progress->pending = server.checksummed.size();
  for (integrity::ChecksummedVolume* v : server.checksummed)
    step(*v, [progress](int err) {
      if (err != 0 && progress->error == 0) progress->error = err;
      --progress->pending;
    });
  asio::steady_timer deadline(server.io, timeout);
  deadline.async_wait([progress](const asio::error_code& ec) {
    if (!ec) progress->timed_out = true;
  });
  if (server.io.stopped()) server.io.restart();
  while (progress->pending > 0 && !progress->timed_out)
    if (server.io.run_one() == 0) break;
  deadline.cancel();
  if (progress->pending > 0) return progress->timed_out ? ETIMEDOUT : ECANCELED;
  return progress->error;
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
  server.policy.handshake_timeout = config.handshake_timeout;
  server.policy.request_timeout = config.request_timeout;
  return Status::Ok();
}

}  // namespace

int Serve(ServeConfig config) {
  if (Status s = ValidateServeConfig(config); !s.ok()) return ExitWithError(s);
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
  if (Status s = StartControl(config, server); !s.ok()) return ExitWithError(s);
  server.listener =
      std::make_unique<server::Listener>(server.io, server.registry, server.limits, server.policy);
  for (const std::string& address : config.listen)
    if (Status s = server.listener->ListenTcp(address); !s.ok()) return ExitWithError(s);
  for (const std::string& path : config.unix_sockets)
    if (Status s = server.listener->ListenUnix(path); !s.ok()) return ExitWithError(s);
  if (Status s = StartMetrics(config, server); !s.ok()) return ExitWithError(s);
  asio::signal_set signals(server.io, SIGINT, SIGTERM);
  signals.async_wait([&server](const asio::error_code& ec, int signo) {
    if (ec) return;
    LOG_INFO("signal %d: stopping", signo);
    server.io.stop();
  });
  asio::signal_set usr1(server.io, SIGUSR1);
  LogStatsOnSignal(server, usr1);
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
  asio::steady_timer stats_timer(server.io);
  if (config.stats_interval.count() > 0) LogStatsEvery(server, stats_timer, config.stats_interval);
  LOG_INFO("serving %zu volume(s)", server.volumes.size());
  server.io.run();
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

}  // namespace dst::aggregator
