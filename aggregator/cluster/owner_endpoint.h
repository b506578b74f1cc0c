// Where an NBD client reaches a volume of the cluster catalog (map --cluster, docs/cluster.md):
// the NBD address its owner advertises in the owner record (`serve --cluster` writes it: its
// --advertise HOST:PORT, else its first TCP --listen address).
//
// CheckOwnerEndpoint is pure, for the unit tests; LookupOwnerEndpoint reads the two records.
// Blocking, one thread at a time (CatalogClient).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "aggregator/cluster/catalog.h"
#include "aggregator/cluster/catalog_client.h"
#include "common/status.h"

namespace dst::cluster {

// From the volume's record and its owner's (nullopt: no such key), one error line each:
//   ENOENT "volume NAME is not in the catalog at URL"
//   EAGAIN "volume NAME is being created (state creating): not served yet"
//   ENOENT "volume NAME has no owner now: no serve --cluster holds it"
//   EADDRNOTAVAIL "volume NAME is owned by HOST (pid P), which advertises no NBD address ..."
// Ok: owner->nbd is the address.
Status CheckOwnerEndpoint(const std::string& name, const std::string& url,
                          const std::optional<VolumeRecord>& volume,
                          const std::optional<OwnerRecord>& owner);

// The NBD address `serve --cluster` advertises in its owner record: `advertise` (--advertise
// HOST:PORT) when given, else the first of `listen` (HOST:PORT, [V6]:PORT) with a wildcard host
// (0.0.0.0, [::]) replaced by `host_name`; empty when there is neither (Unix sockets only).
// EINVAL naming --advertise when it is not HOST:PORT.
Status AdvertisedNbdAddress(const std::string& advertise, const std::vector<std::string>& listen,
                            const std::string& host_name, std::string* out);

// Reads PREFIX/volumes/NAME and PREFIX/owners/NAME and checks them; *owner is the owner's record.
Status LookupOwnerEndpoint(CatalogClient& catalog, const std::string& name, OwnerRecord* owner);

}  // namespace dst::cluster
