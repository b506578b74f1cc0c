// dst-aggregator: serves volumes built from remote NBD exports.
//   dst-aggregator serve --raw [--layout linear|stripe] [--chunk SIZE] [--name NAME]
//                        [--listen HOST:PORT]... [--unix PATH]... URI...
//                        [--io-timeout D] [--retries N] [--retry-window D]
//                        [--keepalive D] [--fencing auto|require|off] [--stats-interval D]
//   dst-aggregator serve --raw --config FILE
//   dst-aggregator create --name NAME [--layout linear|stripe] [--chunk SIZE] [--block-size SIZE]
//                         [--region-size SIZE] [--checksum crc32c|blake2b|blake2b-keyed]
//                         [--key-file FILE] [--force] URI...
//   dst-aggregator inspect [--json] URI...
// main() only parses the command line and wires the parts together; create and inspect live in
// create_command.h and inspect_command.h.
#include <csignal>
#include <cstdio>
#include <memory>
#include <tuple>

#include <CLI/CLI.hpp>

#include "aggregator/create_command.h"
#include "aggregator/inspect_command.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/serve_config.h"
#include "aggregator/server/listener.h"
#include "common/duration.h"
#include "common/log.h"
#include "common/units.h"

namespace {

using dst::Status;
using dst::aggregator::ServeConfig;
using dst::aggregator::VolumeConfig;

constexpr auto kConnectTimeout = std::chrono::seconds(15);

int Die(const Status& s) {
  std::fprintf(stderr, "dst-aggregator: error: %s\n", s.message().c_str());
  return 1;
}

// A member as the stats lines name it.
struct MemberRef {
  std::string volume;
  size_t index;
  const dst::member::NbdMember* member;
};

// Everything a running server owns; destroyed in reverse order.
struct Server {
  asio::io_context io{1};
  std::vector<std::unique_ptr<dst::member::NbdMember>> members;
  std::vector<MemberRef> member_refs;
  std::vector<std::unique_ptr<dst::volume::Volume>> volumes;
  dst::server::ExportRegistry registry;
  dst::server::InFlightLimits limits;
  std::unique_ptr<dst::server::Listener> listener;
};

void WarnAboutUnfencedMembers(const ServeConfig& config, const Server& server) {
  if (config.transactions.fencing == dst::member::FencingMode::kOff) {
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

Status BuildVolumes(const ServeConfig& config, Server& server) {
  std::vector<std::vector<dst::volume::MemberTarget*>> targets;
  for (const VolumeConfig& v : config.volumes) {
    targets.emplace_back();
    for (const std::string& uri : v.members) {
      server.members.push_back(std::make_unique<dst::member::NbdMember>(
          server.io, uri, config.connections_per_member, config.transactions));
      server.member_refs.push_back({v.name, targets.back().size(), server.members.back().get()});
      targets.back().push_back(server.members.back().get());
    }
  }
  DST_RETURN_IF_ERROR(
      dst::member::NbdMember::ConnectAll(server.io, server.members, kConnectTimeout));
  for (size_t i = 0; i < config.volumes.size(); ++i) {
    const VolumeConfig& v = config.volumes[i];
    std::unique_ptr<dst::volume::Volume> volume;
    DST_RETURN_IF_ERROR(dst::volume::Volume::Create(v.name, v.description, v.layout, v.chunk_size,
                                                    targets[i], &volume));
    LOG_INFO("volume %s: %s, %zu members, %s", v.name.c_str(),
             std::string(dst::volume::LayoutKindName(v.layout)).c_str(), v.members.size(),
             dst::FormatSize(volume->size()).c_str());
    for (size_t m = 0; m < v.members.size(); ++m)
      LOG_INFO("volume %s: member %zu %s: %s used of %s%s", v.name.c_str(), m, v.members[m].c_str(),
               dst::FormatSize(volume->layout().member_usable_size(m)).c_str(),
               dst::FormatSize(targets[i][m]->capabilities().size).c_str(),
               targets[i][m]->capabilities().read_only ? " (read-only)" : "");
    server.registry.Add(volume.get());
    server.volumes.push_back(std::move(volume));
  }
  server.registry.SetDefault(config.default_volume);
  WarnAboutUnfencedMembers(config, server);
  return Status::Ok();
}

int Serve(ServeConfig config) {
  if (Status s = ValidateServeConfig(config); !s.ok()) return Die(s);
  Server server;
  server.limits.per_connection = config.max_inflight_per_client;
  server.limits.total = config.max_inflight_total;
  if (Status s = BuildVolumes(config, server); !s.ok()) return Die(s);
  server.listener =
      std::make_unique<dst::server::Listener>(server.io, server.registry, server.limits);
  for (const std::string& address : config.listen)
    if (Status s = server.listener->ListenTcp(address); !s.ok()) return Die(s);
  for (const std::string& path : config.unix_sockets)
    if (Status s = server.listener->ListenUnix(path); !s.ok()) return Die(s);
  asio::signal_set signals(server.io, SIGINT, SIGTERM);
  signals.async_wait([&server](const asio::error_code& ec, int signo) {
    if (ec) return;
    LOG_INFO("signal %d: stopping", signo);
    server.io.stop();
  });
  asio::signal_set usr1(server.io, SIGUSR1);
  LogStatsOnSignal(server, usr1);
  asio::steady_timer stats_timer(server.io);
  if (config.stats_interval.count() > 0) LogStatsEvery(server, stats_timer, config.stats_interval);
  LOG_INFO("serving %zu volume(s)", server.volumes.size());
  server.io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a client that goes away is an error code, not a signal
  CLI::App app{"dst-aggregator: one NBD device from several NBD exports"};
  app.require_subcommand(1);
  CLI::App* serve = app.add_subcommand("serve", "serve volumes over NBD");

  ServeConfig config;
  VolumeConfig volume;
  std::string layout = "linear", chunk = "64K", config_file;
  bool raw = false, verbose = false;
  serve->add_flag("--raw", raw, "serve members as they are, with no metadata or checksums");
  serve->add_option("--layout", layout, "linear or stripe")->capture_default_str();
  serve->add_option("--chunk", chunk, "stripe chunk size (power of two)")->capture_default_str();
  serve->add_option("--name", volume.name, "volume (export) name")->capture_default_str();
  serve->add_option("--description", volume.description, "volume description");
  serve->add_option("--listen", config.listen, "TCP address HOST:PORT (default 127.0.0.1:10809)")
      ->allow_extra_args(false);
  serve->add_option("--unix", config.unix_sockets, "Unix socket path")->allow_extra_args(false);
  serve
      ->add_option("--connections", config.connections_per_member,
                   "connections per multi-conn member")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  std::string io_timeout = "5s", retry_window = "60s", keepalive = "5s", stats_interval = "0",
              fencing = "auto";
  serve->add_option("--io-timeout", io_timeout, "deadline of one member I/O")
      ->capture_default_str();
  serve
      ->add_option("--retries", config.transactions.retries,
                   "resends of one member I/O (0: bounded by --retry-window only)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  serve
      ->add_option("--retry-window", retry_window,
                   "time after which a member I/O is not resent (0: no limit)")
      ->capture_default_str();
  serve->add_option("--keepalive", keepalive, "ping idle member connections this often (0: never)")
      ->capture_default_str();
  serve->add_option("--fencing", fencing, "auto, require or off")->capture_default_str();
  serve
      ->add_option("--stats-interval", stats_interval,
                   "log member counters this often (0: only on SIGUSR1)")
      ->capture_default_str();
  serve->add_option("--config", config_file, "TOML file with listeners and volumes");
  serve->add_flag("-v,--verbose", verbose, "log every request error");
  serve->add_option("members", volume.members, "member NBD URIs, in layout order");
  dst::aggregator::CreateArgs create_args;
  CLI::App* create = dst::aggregator::AddCreateCommand(app, &create_args);
  dst::aggregator::InspectArgs inspect_args;
  CLI::App* inspect = dst::aggregator::AddInspectCommand(app, &inspect_args);
  CLI11_PARSE(app, argc, argv);
  if (create->parsed()) {
    const Status s = dst::aggregator::RunCreate(create_args);
    return s.ok() ? 0 : Die(s);
  }
  if (inspect->parsed()) return dst::aggregator::RunInspect(inspect_args);

  if (verbose) dst::SetLogLevel(dst::LogLevel::kDebug);
  for (auto [name, text, out] :
       {std::tuple{"--io-timeout", &io_timeout, &config.transactions.io_timeout},
        {"--retry-window", &retry_window, &config.transactions.retry_window},
        {"--keepalive", &keepalive, &config.transactions.keepalive},
        {"--stats-interval", &stats_interval, &config.stats_interval}}) {
    const auto duration = dst::ParseDuration(*text);
    if (!duration)
      return Die(Status::Invalid(std::string(name) + " " + *text +
                                 ": not a duration (e.g. 5, 500ms, 2m)"));
    *out = *duration;
  }
  if (!dst::member::ParseFencingMode(fencing, &config.transactions.fencing))
    return Die(Status::Invalid("--fencing " + fencing + ": expected auto, require or off"));
  if (!raw)
    return Die(
        Status::Invalid("volumes with on-member metadata are not implemented yet: use --raw"));
  if (!config_file.empty()) {
    if (!volume.members.empty())
      return Die(Status::Invalid("--config cannot be combined with member URIs"));
    if (Status s = dst::aggregator::LoadServeConfig(config_file, &config); !s.ok()) return Die(s);
  } else {
    if (Status s = dst::volume::ParseLayoutKind(layout, &volume.layout); !s.ok())
      return Die(s.Wrap("--layout"));
    const auto chunk_size = dst::ParseSize(chunk);
    if (!chunk_size) return Die(Status::Invalid("--chunk " + chunk + ": not a size"));
    volume.chunk_size = *chunk_size;
    config.volumes.push_back(volume);
  }
  if (config.listen.empty() && config.unix_sockets.empty())
    config.listen.push_back("127.0.0.1:10809");
  return Serve(std::move(config));
}
