// `dst-aggregator create --cluster URL`: a mirror or raid10 volume on exports the catalog
// offers (docs/cluster.md, "create --cluster").
//
//   dst-aggregator create --cluster URL --name NAME --layout mirror [--copies K] [--size SIZE]
//   dst-aggregator create --cluster URL --name NAME --layout raid10 --sets N [--copies K] ...
//
// with create's format options (block size, checksum, encryption...), no member URIs. In order:
// 1. placement (placement.h) over the registered exports, with each export's capacity in the
//    volume's format; SIZE (default: any) is the least the volume holds;
// 2. one etcd transaction that records the volume ("creating") and marks its exports used, if
//    no volume of that name exists and none of the exports changed since they were read: of two
//    creates of one name, or two creates that picked one export, one wins and the other fails
//    with one line;
// 3. the members formatted exactly as create with those URIs does (RunCreate);
// 4. the volume's UUID and size recorded, "ready".
// A failure in 3 puts the catalog back (the volume's record deleted, its exports freed).
//
// Threading: the calling thread (blocking).
#pragma once

#include <string>

#include "aggregator/cluster/cluster_options.h"
#include "aggregator/create_command.h"
#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct ClusterCreateArgs {
  cluster::ClusterArgs cluster;  // not given: create as usual, from member URIs
  std::string size;
  std::string sets;
};

// Adds --cluster (and its --etcd-* options), --size and --sets to `create`, and makes its member
// URIs optional (create without --cluster still refuses none).
void AddClusterCreateOptions(CLI::App& create, ClusterCreateArgs* args);
// Refuses --size, --sets and the --etcd-* options without --cluster.
Status CheckClusterCreateArgs(const ClusterCreateArgs& args);
Status RunClusterCreate(CreateArgs args, const ClusterCreateArgs& cluster);

}  // namespace dst::aggregator
