#include "aggregator/control/control_plane.h"

#include <algorithm>
#include <csignal>
#include <memory>
#include <vector>

#include "aggregator/control/control_commands.h"
#include "aggregator/control/control_path.h"
#include "aggregator/control/key_commands.h"
#include "aggregator/control/snapshot_commands.h"
#include "aggregator/control/volume_commands.h"
#include "common/log.h"

namespace dst::control {

namespace {

// A control or metrics client gets this long to ask and be answered.
constexpr auto kQueryTimeout = std::chrono::seconds(5);
constexpr size_t kMaxControlRequest = 256;
constexpr size_t kMaxHttpRequest = 8192;

std::string HttpResponse(const std::string& status, const std::string& type,
                         const std::string& body) {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

// The worse of two member states, for a member reached from several loops: failed, then
// reconnecting, then connecting, then ready.
member::NbdMember::State Worse(member::NbdMember::State a, member::NbdMember::State b) {
  using State = member::NbdMember::State;
  auto rank = [](State s) {
    return s == State::kFailed         ? 3
           : s == State::kReconnecting ? 2
           : s == State::kConnecting   ? 1
                                       : 0;
  };
  return rank(a) >= rank(b) ? a : b;
}

MemberStatus MemberStatusOf(const MemberRef& ref, const std::vector<VolumeStatus>& volumes) {
  const member::NbdMember& m = *ref.member;
  member::NbdMember::State state = m.state();
  size_t connections = m.connection_count();
  size_t in_flight = m.in_flight();
  member::MemberCounters counters = m.counters();
  for (const member::NbdMember* copy : ref.loop_copies) {
    state = Worse(state, copy->state());
    connections += copy->connection_count();
    in_flight += copy->in_flight();
    counters += copy->counters();
  }
  MemberStatus status{ref.volume,
                      ref.index,
                      m.name(),
                      std::string(member::MemberStateName(state)),
                      m.fenced(),
                      m.epoch(),
                      connections,
                      in_flight,
                      m.waiting(),
                      counters,
                      0};
  const auto& integrity = volumes.at(ref.volume_index).integrity;
  if (integrity && ref.index < integrity->member_checksum_errors.size())
    status.checksum_errors = integrity->member_checksum_errors[ref.index];
  return status;
}

// Each volume's connected clients, counted by the loop they run on (read on the home loop, where
// the lists change).
std::vector<uint64_t> ClientsByLoop(const Server& server) {
  std::vector<uint64_t> clients(std::max(server.event_loops, 1u), 0);
  for (const auto& volume : server.volumes)
    for (const server::VolumeClient* client : server.registry.TrafficOf(volume.get()).connected)
      if (client->loop() < clients.size()) ++clients[client->loop()];
  return clients;
}

// "reload": "ok: reloaded: 1 added, 0 removed, 2 changed" once applied, or the refusal.
void AnswerReload(Server& server, std::function<void(std::string)> answer) {
  if (!server.reload) return answer("error: reload is not available here\n");
  server.reload([answer = std::move(answer)](Status s, const std::string& summary) {
    answer(s.ok() ? "ok: reloaded: " + summary + "\n" : "error: " + s.message() + "\n");
  });
}

}  // namespace

StatusReport BuildReport(const Server& server) {
  StatusReport report;
  report.uptime_seconds =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::steady_clock::now() - server.started)
                                .count());
  for (const auto& volume : server.volumes) {
    volume::DeviceState state = volume->State();
    report.volumes.push_back(
        {volume->name(), std::string(volume::LayoutKindName(state.layout)), volume->size(),
         state.members, server.registry.TrafficOf(volume.get()).Counts(),
         std::move(state.integrity), std::move(state.redundancy), std::move(state.jobs),
         state.background_rate_min, state.background_rate_max, std::move(state.staging_log)});
  }
  for (const MemberRef& ref : server.member_refs)
    report.members.push_back(MemberStatusOf(ref, report.volumes));
  report.loop_clients = ClientsByLoop(server);
  return report;
}

namespace {

// `endpoints`: where clients reach the volumes, one line each ("tcp HOST:PORT", "unix PATH"),
// whether they need TLS ("tls off|on|require"), the event loops serving them ("loops N") and the
// members' retry window ("retry-window-ms N"), for `dst-aggregator map`.
std::string EndpointsAnswer(const Server& server) {
  std::string out;
  for (const std::string& path : server.client_unix)
    out += "unix " + path + "\n";
  for (const std::string& address : server.client_tcp)
    out += "tcp " + address + "\n";
  out += std::string("tls ") +
         server::TlsModeName(server.tls ? server.tls->mode() : server::TlsMode::kOff) + "\n";
  out += "loops " + std::to_string(server.event_loops) + "\n";
  return out + "retry-window-ms " + std::to_string(server.retry_window.count()) + "\n";
}

}  // namespace

void AnswerControl(Server& server, const std::string& request,
                   std::function<void(std::string)> answer) {
  std::string command = request;
  while (!command.empty() && (command.back() == '\r' || command.back() == ' '))
    command.pop_back();
  if (command == "status") return answer(StatusToText(BuildReport(server)));
  if (command == "status json") return answer(StatusToJson(BuildReport(server)));
  if (command == "reload") return AnswerReload(server, std::move(answer));
  if (command == "endpoints") return answer(EndpointsAnswer(server));
  std::vector<std::string> words;
  for (size_t at = 0; at < command.size();) {
    const size_t end = std::min(command.find(' ', at), command.size());
    if (end > at) words.push_back(command.substr(at, end - at));
    at = end + 1;
  }
  if (IsActingCommand(words)) return AnswerCommand(server, words, std::move(answer));
  if (IsVolumeCommand(words)) return AnswerVolumeCommand(server, words, std::move(answer));
  if (IsKeyCommand(words)) return AnswerKeyCommand(server, words, std::move(answer));
  if (IsSnapshotCommand(words)) return answer(AnswerSnapshotCommand(server, words));
  answer("error: unknown command '" + command +
         "' (expected: status, status json, scrub, resync-rate, member, volume, key, snapshot, "
         "reload, endpoints)\n");
}

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

Status StartControl(Server& server, const std::string& option) {
  if (option == "none") return Status::Ok();
  const bool defaulted = option.empty();
  const std::string path = defaulted ? DefaultControlPath() : option;
  Status s;
  if (const std::string dir = PrivateControlDir(); defaulted && !dir.empty())
    s = CheckPrivateDir(dir, /*create=*/true);
  if (s.ok()) {
    server.control = std::make_unique<server::OneShotServer>(
        server.io, "\n", kMaxControlRequest, kQueryTimeout,
        [&server](const std::string& request, server::OneShotServer::Answer answer) {
          AnswerControl(server, request, std::move(answer));
        });
    s = server.control->ListenUnix(path, 0600);
  }
  if (!s.ok() && defaulted) {
    LOG_WARNING("%s: no control socket (give one with --control PATH)", s.message().c_str());
    server.control.reset();
    return Status::Ok();
  }
  if (s.ok()) LOG_INFO("control socket %s", path.c_str());
  return s;
}

Status StartMetrics(Server& server, const std::string& host_port) {
  if (host_port.empty()) return Status::Ok();
  server.metrics = std::make_unique<server::OneShotServer>(
      server.io, "\r\n\r\n", kMaxHttpRequest, kQueryTimeout,
      [&server](const std::string& request) { return AnswerMetrics(server, request); });
  DST_RETURN_IF_ERROR(server.metrics->ListenTcp(host_port).Wrap("--metrics"));
  LOG_INFO("metrics on http://%s/metrics", host_port.c_str());
  return Status::Ok();
}

StatsLogger::StatsLogger(Server& server, std::chrono::milliseconds interval)
    : server_(server), interval_(interval), usr1_(server.io, SIGUSR1), timer_(server.io) {
  AwaitSignal();
  if (interval_.count() > 0) AwaitTick();
}

void StatsLogger::LogNow() const {
  const StatusReport report = BuildReport(server_);
  for (const MemberStatus& m : report.members)
    LOG_INFO("stats: volume %s member %zu %s: %s", m.volume.c_str(), m.index, m.uri.c_str(),
             MemberStatsFields(m).c_str());
  for (const VolumeStatus& v : report.volumes)
    if (v.integrity)
      LOG_INFO("stats: volume %s integrity: %s", v.name.c_str(),
               IntegrityStatsFields(*v.integrity).c_str());
  for (const VolumeStatus& v : report.volumes) {
    if (!v.redundancy) continue;
    LOG_INFO("stats: volume %s redundancy: %s", v.name.c_str(),
             RedundancyStatsFields(*v.redundancy).c_str());
    for (size_t i = 0; i < v.redundancy->slots.size(); ++i)
      LOG_INFO("stats: volume %s slot %zu %s: %s", v.name.c_str(), i,
               v.redundancy->slots[i].uri.c_str(), SlotStatsFields(v.redundancy->slots[i]).c_str());
  }
  for (const VolumeStatus& v : report.volumes)
    if (v.staging_log)
      LOG_INFO("stats: volume %s staging log %s: %s", v.name.c_str(), v.staging_log->path.c_str(),
               StagingLogStatsFields(*v.staging_log).c_str());
}

void StatsLogger::AwaitSignal() {
  usr1_.async_wait([this](const asio::error_code& ec, int) {
    if (ec) return;
    LogNow();
    AwaitSignal();
  });
}

void StatsLogger::AwaitTick() {
  timer_.expires_after(interval_);
  timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    LogNow();
    AwaitTick();
  });
}

}  // namespace dst::control
