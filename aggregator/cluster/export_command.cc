#include "aggregator/cluster/export_command.h"

#include <cstdio>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "aggregator/cluster/catalog_client.h"
#include "aggregator/command_error.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/member_tls_options.h"
#include "aggregator/serve_config.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using cluster::CatalogClient;
using cluster::ExportRecord;
using cluster::Revisioned;

Status AddExport(CatalogClient& catalog, const ExportArgs& args) {
  if (args.zone.empty()) return Status::Invalid("export add needs --zone");
  DST_RETURN_IF_ERROR(CheckMemberUri(args.uri));
  integrity::MemberReadResult found;
  DST_RETURN_IF_ERROR(integrity::ReadSuperblocks(args.uri, args.tls, &found));
  if (found.read_only) return Status::Error(EROFS, "export " + args.uri + " is read-only");
  ExportRecord record{args.uri, args.zone, found.export_size, false, ""};
  cluster::CreateResult result;
  DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().CreateIfAbsent(
      catalog.keys().Export(args.uri), cluster::EncodeExport(record), 0, &result)));
  if (!result.created) {
    ExportRecord holder;
    DST_RETURN_IF_ERROR(cluster::DecodeExport(result.current.key, result.current.value, &holder));
    return Status::Error(
        EEXIST, "export " + args.uri + " is registered already (zone " + holder.zone + ")");
  }
  std::printf("export %s: zone %s, %s\n", args.uri.c_str(), args.zone.c_str(),
              FormatSize(found.export_size).c_str());
  return Status::Ok();
}

// Sets `drained` unless the record changed since it was read (then reads it again, a few times).
Status DrainExport(CatalogClient& catalog, const ExportArgs& args) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    Revisioned<ExportRecord> e;
    DST_RETURN_IF_ERROR(catalog.GetExport(args.uri, &e));
    e.record.drained = true;
    const std::string key = catalog.keys().Export(args.uri);
    cluster::Txn txn;
    txn.compare.push_back(
        cluster::Compare::ModRevision(key, cluster::Compare::kEqual, e.mod_revision));
    txn.success.push_back(cluster::TxnOp::Put(key, cluster::EncodeExport(e.record)));
    cluster::TxnResult result;
    DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Commit(std::move(txn), &result)));
    if (result.succeeded) {
      std::printf(
          "export %s: drained%s\n", args.uri.c_str(),
          e.record.volume.empty() ? "" : (" (still a member of " + e.record.volume + ")").c_str());
      return Status::Ok();
    }
  }
  return Status::Error(EAGAIN, "export " + args.uri + " keeps changing: drain it again");
}

std::string ExportState(const ExportRecord& e) {
  std::string state = e.volume.empty() ? "free" : "volume " + e.volume;
  if (e.drained) state = "drained" + (e.volume.empty() ? "" : ", " + state);
  return state;
}

Status ListExports(CatalogClient& catalog, bool json) {
  std::vector<Revisioned<ExportRecord>> exports;
  DST_RETURN_IF_ERROR(catalog.ListExports(&exports));
  if (json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& e : exports)
      list.push_back(nlohmann::json::parse(cluster::EncodeExport(e.record)));
    std::printf("%s\n", list.dump(2).c_str());
    return Status::Ok();
  }
  for (const auto& e : exports)
    std::printf("%s zone=%s size=%s state=%s\n", e.record.uri.c_str(), e.record.zone.c_str(),
                FormatSize(e.record.size).c_str(), ExportState(e.record).c_str());
  return Status::Ok();
}

}  // namespace

CLI::App* AddExportCommand(CLI::App& app, ExportArgs* args) {
  CLI::App* command = app.add_subcommand(
      "export", "register export nodes' exports in the cluster catalog, list them, drain one");
  command->add_option("action", args->action, "add, list or drain")
      ->required()
      ->check(CLI::IsMember({"add", "list", "drain"}));
  command->add_option("uri", args->uri, "add, drain: the export's NBD URI");
  command->add_option("--zone", args->zone,
                      "add: the failure zone (rack, room, site); copies of a set never share one");
  cluster::AddClusterOptions(*command, &args->cluster, "the cluster catalog")->required();
  command->add_flag("--json", args->json, "list: print JSON");
  AddMemberTlsOptions(*command, &args->tls);
  return command;
}

int RunExport(const ExportArgs& args) {
  std::unique_ptr<CatalogClient> catalog;
  if (Status s = cluster::OpenCatalog(args.cluster, &catalog); !s.ok()) return ExitWithError(s);
  const bool needs_uri = args.action != "list";
  if (needs_uri == args.uri.empty())
    return ExitWithError(Status::Invalid(needs_uri ? "export " + args.action + " needs the URI"
                                                   : "export list takes no URI"));
  Status s = args.action == "add"     ? AddExport(*catalog, args)
             : args.action == "drain" ? DrainExport(*catalog, args)
                                      : ListExports(*catalog, args.json);
  std::fflush(stdout);
  return s.ok() ? 0 : ExitWithError(s);
}

}  // namespace dst::aggregator
