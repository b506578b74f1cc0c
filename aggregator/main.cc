// dst-aggregator: serves volumes built from remote NBD exports.
//   dst-aggregator serve [--name NAME] [--key-file FILE] [--table-cache SIZE] URI...
//   dst-aggregator serve --raw [--layout linear|stripe] [--chunk SIZE] [--name NAME] URI...
//                        with either: [--listen HOST:PORT]... [--unix PATH]...
//                        [--io-timeout D] [--retries N] [--retry-window D]
//                        [--keepalive D] [--fencing auto|require|off] [--stats-interval D]
//                        [--tls off|on|require --tls-psk FILE | --tls-certificates DIR]
//                        [--max-connections N] [--handshake-timeout D] [--request-timeout D]
//   dst-aggregator serve [--raw] --config FILE
//   dst-aggregator create --name NAME [--layout linear|stripe] [--chunk SIZE] [--block-size SIZE]
//                         [--region-size SIZE] [--checksum crc32c|blake2b|blake2b-keyed]
//                         [--key-file FILE] [--force] URI...
//   dst-aggregator inspect [--json] URI...
//   dst-aggregator status [--control PATH] [--json]
// serve, create and inspect also take the member TLS options (member_tls_options.h):
//   [--member-tls-psk FILE [--member-tls-username NAME] | --member-tls-certificates DIR]
//   [--[no-]member-tls-verify-peer]
// main() only parses the command line; serve, create and inspect live in serve_command.h,
// create_command.h and inspect_command.h.
#include <csignal>
#include <cstdio>
#include <memory>
#include <tuple>

#include <CLI/CLI.hpp>

#include "aggregator/command_error.h"
#include "aggregator/create_command.h"
#include "aggregator/inspect_command.h"
#include "aggregator/member_tls_options.h"
#include "aggregator/serve_command.h"
#include "aggregator/serve_config.h"
#include "aggregator/status_command.h"
#include "common/duration.h"
#include "common/log.h"
#include "common/units.h"

namespace {

using dst::Status;
using dst::aggregator::ExitWithError;
using dst::aggregator::ServeConfig;
using dst::aggregator::VolumeConfig;

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a client that goes away is an error code, not a signal
  CLI::App app{"dst-aggregator: one NBD device from several NBD exports"};
  app.require_subcommand(1);
  app.fallthrough();  // --log-format may come after the subcommand too
  CLI::App* serve = app.add_subcommand("serve", "serve volumes over NBD");

  ServeConfig config;
  VolumeConfig volume;
  std::string layout = "linear", chunk = "64K", config_file;
  bool raw = false, verbose = false, check_config = false;
  serve->add_flag("--raw", raw, "serve members as they are, with no metadata or checksums");
  std::string table_cache = "64M";
  serve->add_option("--key-file", volume.key_file, "checksum key of a blake2b-keyed volume");
  serve
      ->add_option("--table-cache", table_cache,
                   "memory for checksum table pages, per assembled volume")
      ->capture_default_str();
  serve->add_option("--layout", layout, "linear or stripe")->capture_default_str();
  serve->add_option("--chunk", chunk, "stripe chunk size (power of two)")->capture_default_str();
  serve->add_option("--name", volume.name,
                    "volume (export) name; raw: default vol0, assembled: must match the members");
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
  serve->add_option("--control", config.control,
                    "control socket for `status` (default " +
                        dst::aggregator::DefaultControlPath() + "; none: no socket)");
  serve->add_option("--metrics", config.metrics,
                    "serve Prometheus metrics over HTTP on HOST:PORT (/metrics)");
  std::string tls_mode = "off", handshake_timeout = "10s", request_timeout = "30s",
              max_inflight_per_client = "64M";
  serve->add_option("--tls", tls_mode, "client TLS: off, on (clients choose) or require")
      ->capture_default_str();
  serve->add_option("--tls-psk", config.tls.psk_file,
                    "client TLS with pre-shared keys: identity:hexkey lines (psktool)");
  serve->add_option("--tls-certificates", config.tls.certificates_dir,
                    "client TLS with X.509: DIR with server-cert.pem, server-key.pem, ca-cert.pem");
  serve->add_flag("--tls-verify-peer", config.tls.verify_peer,
                  "X.509: require client certificates signed by DIR/ca-cert.pem");
  serve
      ->add_option("--max-connections", config.max_connections,
                   "client connections open at once; more are closed at accept")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  serve
      ->add_option("--handshake-timeout", handshake_timeout,
                   "time a client has to choose an export")
      ->capture_default_str();
  serve
      ->add_option("--request-timeout", request_timeout,
                   "time a client has to finish sending a started request, or to read a reply")
      ->capture_default_str();
  serve
      ->add_option("--max-inflight-per-client", max_inflight_per_client,
                   "request data held in memory per client before its reads pause")
      ->capture_default_str();
  serve->add_flag("-v,--verbose", verbose, "log every request error");
  std::string log_format = "text";
  app.add_option("--log-format", log_format, "text, or json: one JSON object a line")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  serve->add_flag("--check-config", check_config,
                  "check the configuration (options and --config file) and exit, serving nothing");
  serve->add_option("members", volume.members,
                    "member NBD URIs: raw in layout order, assembled in any order");
  dst::aggregator::AddMemberTlsOptions(*serve, &config.member_tls);
  dst::aggregator::CreateArgs create_args;
  CLI::App* create = dst::aggregator::AddCreateCommand(app, &create_args);
  dst::aggregator::InspectArgs inspect_args;
  CLI::App* inspect = dst::aggregator::AddInspectCommand(app, &inspect_args);
  dst::aggregator::StatusArgs status_args;
  CLI::App* status = dst::aggregator::AddStatusCommand(app, &status_args);
  CLI11_PARSE(app, argc, argv);
  if (log_format == "json") dst::SetLogFormat(dst::LogFormat::kJson);
  if (status->parsed()) return dst::aggregator::RunStatus(status_args);
  if (create->parsed()) {
    const Status s = dst::aggregator::RunCreate(create_args);
    return s.ok() ? 0 : ExitWithError(s);
  }
  if (inspect->parsed()) return dst::aggregator::RunInspect(inspect_args);

  if (verbose) dst::SetLogLevel(dst::LogLevel::kDebug);
  for (auto [name, text, out] :
       {std::tuple{"--io-timeout", &io_timeout, &config.transactions.io_timeout},
        {"--retry-window", &retry_window, &config.transactions.retry_window},
        {"--keepalive", &keepalive, &config.transactions.keepalive},
        {"--stats-interval", &stats_interval, &config.stats_interval},
        {"--handshake-timeout", &handshake_timeout, &config.handshake_timeout},
        {"--request-timeout", &request_timeout, &config.request_timeout}}) {
    const auto duration = dst::ParseDuration(*text);
    if (!duration)
      return ExitWithError(Status::Invalid(std::string(name) + " " + *text +
                                           ": not a duration (e.g. 5, 500ms, 2m)"));
    *out = *duration;
  }
  if (!dst::member::ParseFencingMode(fencing, &config.transactions.fencing))
    return ExitWithError(
        Status::Invalid("--fencing " + fencing + ": expected auto, require or off"));
  if (!dst::server::ParseTlsMode(tls_mode, &config.tls.mode))
    return ExitWithError(Status::Invalid("--tls " + tls_mode + ": expected off, on or require"));
  const auto inflight = dst::ParseSize(max_inflight_per_client);
  if (!inflight || *inflight == 0)
    return ExitWithError(
        Status::Invalid("--max-inflight-per-client " + max_inflight_per_client + ": not a size"));
  config.max_inflight_per_client = *inflight;
  config.raw = raw;
  const auto cache_size = dst::ParseSize(table_cache);
  if (!cache_size)
    return ExitWithError(Status::Invalid("--table-cache " + table_cache + ": not a size"));
  config.table_cache = *cache_size;
  if (!config_file.empty()) {
    if (!volume.members.empty())
      return ExitWithError(Status::Invalid("--config cannot be combined with member URIs"));
    if (serve->count("--key-file") || serve->count("--name") || serve->count("--layout") ||
        serve->count("--chunk"))
      return ExitWithError(
          Status::Invalid("--config: give --name, --layout, --chunk and --key-file in the "
                          "file's [[volume]] tables"));
    if (Status s = dst::aggregator::LoadServeConfig(config_file, &config); !s.ok())
      return ExitWithError(s);
  } else {
    if (Status s = dst::volume::ParseLayoutKind(layout, &volume.layout); !s.ok())
      return ExitWithError(s.Wrap("--layout"));
    const auto chunk_size = dst::ParseSize(chunk);
    if (!chunk_size) return ExitWithError(Status::Invalid("--chunk " + chunk + ": not a size"));
    volume.chunk_size = *chunk_size;
    volume.layout_given = serve->count("--layout") || serve->count("--chunk");
    config.volumes.push_back(volume);
  }
  if (config.listen.empty() && config.unix_sockets.empty())
    config.listen.push_back("127.0.0.1:10809");
  if (check_config) {
    if (Status s = dst::aggregator::CheckServeConfig(config); !s.ok()) return ExitWithError(s);
    std::printf("configuration OK: %zu volume(s)\n", config.volumes.size());
    return 0;
  }
  return dst::aggregator::Serve(std::move(config));
}
