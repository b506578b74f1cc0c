// A volume removed from the cluster catalog (`volume remove --cluster`, docs/cluster.md,
// "Removing a volume"): its record deleted and its exports freed, in one transaction on
// condition that nobody owns it and nothing changed since it was read.
//
// - A volume with an owner record is refused: the record goes with the owner's lease, so a
//   dead owner stops holding it one lease TTL after it died; --force does not override a live
//   one.
// - A volume still "creating" is refused while its create is alive (the lease named in the
//   record is being renewed); once that lease is gone (the create was killed) the record is a
//   leftover and is removed. A "creating" record that names no lease (written by an older dst)
//   is removed with --force only.
// - The exports' data is left as it is: they keep the volume's superblocks, which create
//   --force formats over.
//
// Blocking, one thread at a time (CatalogClient).
#pragma once

#include <string>
#include <vector>

#include "aggregator/cluster/catalog.h"
#include "aggregator/cluster/catalog_client.h"
#include "common/status.h"

namespace dst::cluster {

// Whether the create that wrote a "creating" record still runs.
enum class Creator {
  kNone,     // the volume is ready
  kAlive,    // its lease is being renewed
  kGone,     // its lease expired or was revoked: the record is a leftover
  kUnknown,  // the record names no lease
};
Status FindCreator(CatalogClient& catalog, const VolumeRecord& volume, Creator* creator);

struct RemovedVolume {
  VolumeRecord record;             // as it was
  std::vector<std::string> freed;  // the exports that were its members
};

Status RemoveVolume(CatalogClient& catalog, const std::string& name, bool force,
                    RemovedVolume* removed);

}  // namespace dst::cluster
