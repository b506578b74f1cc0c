// dst-aggregator: serves volumes built from remote NBD exports.
//   dst-aggregator serve [OPTIONS] URI...          (serve_options.h: every option)
//   dst-aggregator serve [--raw] --config FILE
//   dst-aggregator create --name NAME [--layout linear|stripe] [--chunk SIZE] [--block-size SIZE]
//                         [--region-size SIZE] [--checksum crc32c|blake2b|blake2b-keyed]
//                         [--key-file FILE] [--force] URI...
//   dst-aggregator inspect [--json] URI...
//   dst-aggregator status [--control PATH] [--json]
//   dst-aggregator status --cluster URL [--json]
//   dst-aggregator scrub [--control PATH] VOLUME start [--check|--repair] | pause | resume | stop
//   dst-aggregator resync-rate [--control PATH] VOLUME --min RATE --max RATE
//   dst-aggregator member [--control PATH] fail|remove VOLUME SLOT
//   dst-aggregator member [--control PATH] set VOLUME SLOT write-mostly|readwrite
//   dst-aggregator volume [--control PATH] list [--json] | remove NAME [--force]
//                 | add NAME URI... [--raw] [--layout L] [--chunk C] ...
//   dst-aggregator reload [--control PATH]
//   dst-aggregator key [--control PATH] list VOLUME | remove VOLUME SLOT
//                 | add VOLUME (--key-file F | --passphrase-file F) [--passphrase-cost N]
//   dst-aggregator map [--device /dev/nbdN] [--connections N] [--timeout S] [--block-size B]
//                      [--read-only] [--print-endpoint]
//                      [--control PATH | --connect HOST:PORT | --socket PATH | --cluster URL]
//                      VOLUME
//   dst-aggregator unmap /dev/nbdN|VOLUME
//   dst-aggregator list-mapped [--json]
//   dst-aggregator create --cluster URL --name NAME --layout mirror|raid10 [--size SIZE] ...
//   dst-aggregator serve --cluster URL [--takeover] [--lease-ttl SECONDS] [--advertise HOST:PORT]
//                        [OPTIONS] VOLUME...
//   dst-aggregator export add URI --zone ZONE | list [--json] | drain URI  --cluster URL
//   dst-aggregator volume remove NAME --cluster URL [--force]
// --cluster also takes --etcd-cacert, --etcd-cert and --etcd-key (cluster/cluster_options.h).
// serve, create and inspect also take the member TLS options (member_tls_options.h).
// main() only parses the command line; each command lives in its own *_command.h (serve's
// options in serve_options.h).
#include <csignal>

#include <CLI/CLI.hpp>

#include "aggregator/cluster/cluster_create.h"
#include "aggregator/cluster/cluster_status.h"
#include "aggregator/cluster/export_command.h"
#include "aggregator/cluster/ownership.h"
#include "aggregator/command_error.h"
#include "aggregator/create_command.h"
#include "aggregator/inspect_command.h"
#include "aggregator/key_command.h"
#include "aggregator/map/map_command.h"
#include "aggregator/map/unmap_command.h"
#include "aggregator/member_command.h"
#include "aggregator/reload_command.h"
#include "aggregator/resync_rate_command.h"
#include "aggregator/scrub_command.h"
#include "aggregator/serve_command.h"
#include "aggregator/snapshot_command.h"
#include "aggregator/status_command.h"
#include "aggregator/volume_command.h"
#include "common/log.h"

int main(int argc, char** argv) {
  namespace agg = dst::aggregator;
  std::signal(SIGPIPE, SIG_IGN);  // a client that goes away is an error code, not a signal
  CLI::App app{"dst-aggregator: one NBD device from several NBD exports"};
  app.require_subcommand(1);
  app.fallthrough();  // --log-format may come after the subcommand too
  std::string log_format = "text";
  app.add_option("--log-format", log_format, "text, or json: one JSON object a line")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  agg::ServeArgs serve_args;
  CLI::App* serve = agg::AddServeCommand(app, &serve_args);
  agg::ClusterServeArgs cluster_serve_args;
  agg::AddClusterServeOptions(*serve, &cluster_serve_args);
  agg::CreateArgs create_args;
  CLI::App* create = agg::AddCreateCommand(app, &create_args);
  agg::ClusterCreateArgs cluster_create_args;
  agg::AddClusterCreateOptions(*create, &cluster_create_args);
  agg::ExportArgs export_args;
  CLI::App* export_command = agg::AddExportCommand(app, &export_args);
  agg::InspectArgs inspect_args;
  CLI::App* inspect = agg::AddInspectCommand(app, &inspect_args);
  agg::StatusArgs status_args;
  CLI::App* status = agg::AddStatusCommand(app, &status_args);
  dst::cluster::ClusterArgs cluster_status_args;
  agg::AddClusterStatusOption(*status, &cluster_status_args);
  agg::ScrubArgs scrub_args;
  CLI::App* scrub = agg::AddScrubCommand(app, &scrub_args);
  agg::ResyncRateArgs rate_args;
  CLI::App* rate = agg::AddResyncRateCommand(app, &rate_args);
  agg::MemberArgs member_args;
  CLI::App* member = agg::AddMemberCommand(app, &member_args);
  agg::VolumeArgs volume_args;
  CLI::App* volume = agg::AddVolumeCommand(app, &volume_args);
  agg::ReloadArgs reload_args;
  CLI::App* reload = agg::AddReloadCommand(app, &reload_args);
  agg::KeyArgs key_args;
  CLI::App* key = agg::AddKeyCommand(app, &key_args);
  agg::SnapshotArgs snapshot_args;
  CLI::App* snapshot = agg::AddSnapshotCommand(app, &snapshot_args);
  agg::map::MapArgs map_args;
  CLI::App* map = agg::map::AddMapCommand(app, &map_args);
  agg::map::UnmapArgs unmap_args;
  CLI::App* unmap = agg::map::AddUnmapCommand(app, &unmap_args);
  agg::map::ListMappedArgs list_mapped_args;
  CLI::App* list_mapped = agg::map::AddListMappedCommand(app, &list_mapped_args);
  CLI11_PARSE(app, argc, argv);

  if (log_format == "json") dst::SetLogFormat(dst::LogFormat::kJson);
  if (serve->parsed() && !cluster_serve_args.cluster.given() &&
      (cluster_serve_args.takeover || serve->count("--lease-ttl") > 0 ||
       !cluster_serve_args.advertise.empty()))
    return agg::ExitWithError(
        dst::Status::Invalid("--takeover, --lease-ttl and --advertise are for --cluster"));
  if (serve->parsed()) {
    if (dst::Status s = dst::cluster::CheckClusterArgs(cluster_serve_args.cluster); !s.ok())
      return agg::ExitWithError(s);
  }
  if (serve->parsed())
    return !cluster_serve_args.cluster.given()
               ? agg::RunServe(serve_args)
               : agg::RunClusterServe(serve_args, cluster_serve_args);
  if (status->parsed()) {
    if (dst::Status s = dst::cluster::CheckClusterArgs(cluster_status_args); !s.ok())
      return agg::ExitWithError(s);
  }
  if (status->parsed() && cluster_status_args.given()) {
    if (!status_args.control.empty())
      return agg::ExitWithError(dst::Status::Invalid("status: --cluster or --control, not both"));
    return agg::RunClusterStatus(cluster_status_args, status_args.json);
  }
  if (status->parsed()) return agg::RunStatus(status_args);
  if (scrub->parsed()) return agg::RunScrub(scrub_args);
  if (rate->parsed()) return agg::RunResyncRate(rate_args);
  if (member->parsed()) return agg::RunMember(member_args);
  if (volume->parsed()) return agg::RunVolume(volume_args);
  if (reload->parsed()) return agg::RunReload(reload_args);
  if (key->parsed()) return agg::RunKey(key_args);
  if (snapshot->parsed()) return agg::RunSnapshot(snapshot_args);
  if (export_command->parsed()) return agg::RunExport(export_args);
  if (create->parsed()) {
    dst::Status s = agg::CheckClusterCreateArgs(cluster_create_args);
    if (s.ok())
      s = !cluster_create_args.cluster.given()
              ? agg::RunCreate(create_args)
              : agg::RunClusterCreate(create_args, cluster_create_args);
    return s.ok() ? 0 : agg::ExitWithError(s);
  }
  if (inspect->parsed()) return agg::RunInspect(inspect_args);
  if (map->parsed()) return agg::map::RunMap(map_args);
  if (unmap->parsed()) return agg::map::RunUnmap(unmap_args);
  if (list_mapped->parsed()) return agg::map::RunListMapped(list_mapped_args);
  return 1;
}
