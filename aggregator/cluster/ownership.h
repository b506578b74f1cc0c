// `dst-aggregator serve --cluster URL [--takeover] [--lease-ttl SECONDS] VOLUME...`: serves
// volumes of the cluster catalog, each under an exclusive, lease-backed lock (docs/cluster.md,
// "Ownership").
//
// - The members of each volume come from its catalog record; the other serve options apply as
//   without --cluster.
// - One lease (--lease-ttl, default 10 s) backs the owner key PREFIX/owners/VOLUME of every
//   volume, created with CreateIfAbsent before the volume is assembled. The assembly claims the
//   ownership epoch max(superblock epoch + 1, the lock's revision), so that later holders of the
//   lock fence earlier ones at the export nodes (docs/cluster.md, "The ownership epoch"). A volume
//   owned by someone else is refused with one line naming the owner; with --takeover, serve
//   waits (at most the owner's lease TTL and 5 s more) for the owner's lease to expire, then
//   takes the lock, and its higher epoch fences the old owner at the export nodes.
// - The lease is renewed every TTL/3 on a thread of its own, from the moment the locks are taken
//   (assembly blocks the serving thread); the serving event loop acts on its loss. When it is
//   lost (etcd says it expired, or no renewal succeeded for a whole TTL, counted from when the
//   last good one was sent, which is no later than etcd's count) every volume stops writes at
//   once (ChecksummedVolume::StopWrites): `volume V: cluster lease L lost (...): no more
//   writes`.
// - The owner record carries the NBD address clients reach the volume at (map --cluster):
//   --advertise HOST:PORT, else the first TCP --listen address (owner_endpoint.h).
// - A clean stop revokes the lease, which frees the volumes at once.
//
// Threading: the calling thread, which then runs the event loop (Serve).
#pragma once

#include <string>

#include "aggregator/cluster/cluster_options.h"
#include "aggregator/serve_args.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct ClusterServeArgs {
  cluster::ClusterArgs cluster;  // not given: serve as usual
  bool takeover = false;
  unsigned lease_ttl = 10;  // seconds
  std::string advertise;    // HOST:PORT for the owner record; empty: the first TCP --listen
};

// Adds --cluster (and its --etcd-* options), --takeover, --lease-ttl and --advertise to `serve`.
void AddClusterServeOptions(CLI::App& serve, ClusterServeArgs* args);
// The exit code, as RunServe's. `args.members` are volume names.
int RunClusterServe(const ServeArgs& args, const ClusterServeArgs& cluster);

}  // namespace dst::aggregator
