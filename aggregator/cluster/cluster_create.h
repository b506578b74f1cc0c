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
// 4. the volume's UUID and size recorded, "ready", on condition that the record is still the
//    one reserved (a removal of a leftover "creating" record may have gone first).
// A failure in 3 puts the catalog back (the volume's record deleted, its exports freed). From
// before 2 to the end the create holds a lease (--lease-ttl, kCreateLeaseTtl), renewed from a
// thread of its own, whose ID the "creating" record carries: a create killed in 3 leaves a
// record whose lease expires, which `volume remove --cluster` then removes, and which a create
// of the same name names as such.
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
  unsigned lease_ttl = 0;  // seconds; 0: kCreateLeaseTtl
};

// The lease that shows a create alive while it formats the members (volume remove --cluster
// refuses its "creating" record while it lives, and removes it once it is gone).
inline constexpr unsigned kCreateLeaseTtl = 10;

// Adds --cluster (and its --etcd-* options), --size, --sets and --lease-ttl to `create`, and makes
// its member URIs optional (create without --cluster still refuses none).
void AddClusterCreateOptions(CLI::App& create, ClusterCreateArgs* args);
// Refuses --size, --sets, --lease-ttl and the --etcd-* options without --cluster.
Status CheckClusterCreateArgs(const ClusterCreateArgs& args);
Status RunClusterCreate(CreateArgs args, const ClusterCreateArgs& cluster);

}  // namespace dst::aggregator
