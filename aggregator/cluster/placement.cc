#include "aggregator/cluster/placement.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "common/units.h"

namespace dst::cluster {

namespace {

// The fitting free exports of each zone, smallest first.
using Zones = std::map<std::string, std::vector<const PlacementExport*>>;

Zones FittingExports(const std::vector<PlacementExport>& exports, uint64_t min_capacity) {
  Zones zones;
  for (const PlacementExport& e : exports)
    if (!e.drained && !e.used && e.capacity >= min_capacity) zones[e.zone].push_back(&e);
  for (auto& [zone, list] : zones)
    std::sort(list.begin(), list.end(), [](const PlacementExport* a, const PlacementExport* b) {
      return std::tie(a->capacity, a->uri) < std::tie(b->capacity, b->uri);
    });
  return zones;
}

// "need 2 zones with a free export of at least 1 GiB, have 1: zone-a (2 free)".
Status NotEnoughZones(const Zones& zones, const PlacementRequest& request, uint32_t set) {
  std::string text = "need " + std::to_string(request.copies) + " zones with a free export";
  if (request.min_capacity > 0) text += " of at least " + FormatSize(request.min_capacity);
  if (request.sets > 1)
    text += " for set " + std::to_string(set) + " of " + std::to_string(request.sets);
  size_t have = 0;
  std::string list;
  for (const auto& [zone, exports] : zones) {
    if (exports.empty()) continue;
    list += std::string(have++ == 0 ? "" : ", ") + zone + " (" + std::to_string(exports.size()) +
            " free)";
  }
  text += ", have " + std::to_string(have) + (have > 0 ? ": " + list : "");
  return Status::Invalid(text);
}

}  // namespace

Status Place(const std::vector<PlacementExport>& exports, const PlacementRequest& request,
             std::vector<std::string>* uris) {
  if (request.sets == 0 || request.copies == 0)
    return Status::Invalid("a volume needs at least one set of at least one copy");
  Zones zones = FittingExports(exports, request.min_capacity);
  std::vector<std::string> placed;
  for (uint32_t set = 0; set < request.sets; ++set) {
    std::vector<std::string> candidates;
    for (const auto& [zone, list] : zones)
      if (!list.empty()) candidates.push_back(zone);
    if (candidates.size() < request.copies) return NotEnoughZones(zones, request, set);
    const bool spread = request.sets > 1;
    std::sort(candidates.begin(), candidates.end(),
              [&zones, spread](const std::string& a, const std::string& b) {
                const auto& la = zones.at(a);
                const auto& lb = zones.at(b);
                const size_t left_a = spread ? la.size() : 0;
                const size_t left_b = spread ? lb.size() : 0;
                return std::make_tuple(-static_cast<int64_t>(left_a), la.front()->capacity, a) <
                       std::make_tuple(-static_cast<int64_t>(left_b), lb.front()->capacity, b);
              });
    for (uint32_t copy = 0; copy < request.copies; ++copy) {
      auto& list = zones.at(candidates[copy]);
      placed.push_back(list.front()->uri);
      list.erase(list.begin());
    }
  }
  *uris = std::move(placed);
  return Status::Ok();
}

}  // namespace dst::cluster
