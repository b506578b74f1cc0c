// `dst-aggregator status --cluster URL [--json]`: the volumes of the cluster catalog with their
// state and owner (docs/cluster.md), one line each:
//   mir layout=mirror copies=2 size=7 MiB state=ready owner=host-a (pid 4242) members=URI,URI
// (the owner followed by " at HOST:PORT" when it advertises an NBD address)
// or, with --json, an array of the volume records, each with "owner" (an owner record or null).
//
// Threading: the calling thread (blocking).
#pragma once

#include <string>

#include "aggregator/cluster/cluster_options.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

void AddClusterStatusOption(CLI::App& status, cluster::ClusterArgs* cluster);
int RunClusterStatus(const cluster::ClusterArgs& cluster, bool json);

}  // namespace dst::aggregator
