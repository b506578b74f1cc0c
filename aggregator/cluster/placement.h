// Placement: which registered exports a new mirror or raid10 volume gets (docs/cluster.md,
// "Placement"). Pure: the caller reads the catalog and says how much data each export can hold
// in the volume's format; Place picks.
//
// Rules:
// - only free exports (not drained, not used by a volume) whose capacity is at least the size
//   asked for;
// - never two copies of one set in one zone, so that losing a zone loses at most one copy of
//   each set;
// - for one set (a mirror), the smallest fitting exports, one per zone, the zones with the
//   smallest candidates first; for several sets (raid10), the zones with the most fitting
//   exports left first, so that later sets still find enough zones;
// - ties broken by zone name and URI, so that the same catalog always gives the same answer.
//
// The URIs come back in layout order: member i is copy i % copies of set i / copies, as create
// numbers them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace dst::cluster {

struct PlacementExport {
  std::string uri;
  std::string zone;
  uint64_t capacity = 0;  // the data bytes it holds once formatted for the volume
  bool drained = false;
  bool used = false;  // a member of some volume
};

struct PlacementRequest {
  uint32_t sets = 1;
  uint32_t copies = 2;
  uint64_t min_capacity = 0;  // 0: any size
};

// On failure, EINVAL and one line: "need 2 zones with a free export of at least 1 GiB, have 1:
// zone-a (2 free)".
Status Place(const std::vector<PlacementExport>& exports, const PlacementRequest& request,
             std::vector<std::string>* uris);

}  // namespace dst::cluster
