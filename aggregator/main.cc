// dst-aggregator: serves volumes built from remote NBD exports.
//   dst-aggregator serve --raw [--layout linear|stripe] [--chunk SIZE] [--name NAME]
//                        [--listen HOST:PORT]... [--unix PATH]... URI...
//   dst-aggregator serve --raw --config FILE
// main() only parses the command line and wires the parts together.
#include <csignal>
#include <cstdio>
#include <memory>

#include <CLI/CLI.hpp>

#include "aggregator/member/nbd_member.h"
#include "aggregator/serve_config.h"
#include "aggregator/server/listener.h"
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

// Everything a running server owns; destroyed in reverse order.
struct Server {
  asio::io_context io{1};
  std::vector<std::unique_ptr<dst::member::NbdMember>> members;
  std::vector<std::unique_ptr<dst::volume::Volume>> volumes;
  dst::server::ExportRegistry registry;
  dst::server::InFlightLimits limits;
  std::unique_ptr<dst::server::Listener> listener;
};

Status BuildVolumes(const ServeConfig& config, Server& server) {
  std::vector<std::vector<dst::volume::MemberTarget*>> targets;
  for (const VolumeConfig& v : config.volumes) {
    targets.emplace_back();
    for (const std::string& uri : v.members) {
      server.members.push_back(
          std::make_unique<dst::member::NbdMember>(server.io, uri, config.connections_per_member));
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
  serve->add_option("--config", config_file, "TOML file with listeners and volumes");
  serve->add_flag("-v,--verbose", verbose, "log every request error");
  serve->add_option("members", volume.members, "member NBD URIs, in layout order");
  CLI11_PARSE(app, argc, argv);

  if (verbose) dst::SetLogLevel(dst::LogLevel::kDebug);
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
