// `dst-aggregator export`: the export nodes' exports in the cluster catalog (docs/cluster.md).
//
//   dst-aggregator export add URI --zone ZONE --cluster URL [member TLS options]
// (each with the --etcd-* options, cluster_options.h)
//   dst-aggregator export list --cluster URL [--json]
//   dst-aggregator export drain URI --cluster URL
//
// add reads the export's size over NBD (libnbd) and registers it, free; an export registered
// already is refused. drain keeps create --cluster from placing new volumes on it (the volume it
// serves, if any, keeps it). list prints one line per export: URI, zone, size and state (free,
// drained, or the volume it belongs to).
//
// Threading: runs on the calling thread (blocking).
#pragma once

#include <string>

#include "aggregator/cluster/cluster_options.h"
#include "aggregator/member/member_tls.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct ExportArgs {
  std::string action;  // add, list, drain
  std::string uri;
  std::string zone;
  cluster::ClusterArgs cluster;
  bool json = false;
  member::MemberTls tls;
};

CLI::App* AddExportCommand(CLI::App& app, ExportArgs* args);
int RunExport(const ExportArgs& args);

}  // namespace dst::aggregator
