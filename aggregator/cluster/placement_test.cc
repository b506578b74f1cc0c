#include "aggregator/cluster/placement.h"

#include <doctest/doctest.h>

namespace dst::cluster::placement_test {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

PlacementExport Export(std::string uri, std::string zone, uint64_t capacity) {
  return {std::move(uri), std::move(zone), capacity, false, false};
}

std::vector<std::string> PlaceOk(const std::vector<PlacementExport>& exports,
                                 PlacementRequest request) {
  std::vector<std::string> uris;
  const Status s = Place(exports, request, &uris);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return uris;
}

std::string PlaceError(const std::vector<PlacementExport>& exports, PlacementRequest request) {
  std::vector<std::string> uris;
  const Status s = Place(exports, request, &uris);
  REQUIRE_FALSE(s.ok());
  CHECK(s.err() == EINVAL);
  CHECK(uris.empty());
  return s.message();
}

TEST_CASE("a mirror gets the smallest fitting export of two different zones") {
  const std::vector<PlacementExport> exports = {
      Export("nbd://a1", "zone-a", 4 * kGiB), Export("nbd://a2", "zone-a", 2 * kGiB),
      Export("nbd://b1", "zone-b", 3 * kGiB), Export("nbd://c1", "zone-c", 8 * kGiB)};
  CHECK(PlaceOk(exports, {1, 2, 0}) == std::vector<std::string>{"nbd://a2", "nbd://b1"});
  // At least 3 GiB: a2 is too small, a1 (4 GiB) and b1 (3 GiB) fit; b1 is the smaller.
  CHECK(PlaceOk(exports, {1, 2, 3 * kGiB}) == std::vector<std::string>{"nbd://b1", "nbd://a1"});
  CHECK(PlaceOk(exports, {1, 3, 3 * kGiB}) ==
        std::vector<std::string>{"nbd://b1", "nbd://a1", "nbd://c1"});
}

TEST_CASE("two copies never share a zone, however many exports the zone has") {
  const std::vector<PlacementExport> exports = {Export("nbd://a1", "zone-a", kGiB),
                                                Export("nbd://a2", "zone-a", kGiB)};
  CHECK(PlaceError(exports, {1, 2, 0}) ==
        "need 2 zones with a free export, have 1: zone-a (2 free)");
  CHECK(PlaceError(exports, {1, 2, kGiB}) ==
        "need 2 zones with a free export of at least 1 GiB, have 1: zone-a (2 free)");
}

TEST_CASE("drained, used and too small exports are not placed") {
  std::vector<PlacementExport> exports = {
      Export("nbd://a1", "zone-a", 4 * kGiB), Export("nbd://b1", "zone-b", 4 * kGiB),
      Export("nbd://c1", "zone-c", kGiB), Export("nbd://d1", "zone-d", 4 * kGiB)};
  exports[0].drained = true;
  exports[1].used = true;
  CHECK(PlaceError(exports, {1, 2, 2 * kGiB}) ==
        "need 2 zones with a free export of at least 2 GiB, have 1: zone-d (1 free)");
  CHECK(PlaceOk(exports, {1, 2, 0}) == std::vector<std::string>{"nbd://c1", "nbd://d1"});
  CHECK(PlaceError({}, {1, 2, 0}) == "need 2 zones with a free export, have 0");
}

TEST_CASE("raid10 sets spread over the zones with the most exports left, in layout order") {
  const std::vector<PlacementExport> exports = {
      Export("nbd://a1", "zone-a", kGiB), Export("nbd://a2", "zone-a", kGiB),
      Export("nbd://b1", "zone-b", kGiB), Export("nbd://c1", "zone-c", kGiB),
      Export("nbd://c2", "zone-c", kGiB)};
  // Set 0 takes a and c (two left each); set 1 then finds a, b and c with one each.
  const auto uris = PlaceOk(exports, {2, 2, 0});
  CHECK(uris == std::vector<std::string>{"nbd://a1", "nbd://c1", "nbd://a2", "nbd://b1"});
  CHECK(PlaceError(exports, {3, 2, 0}) ==
        "need 2 zones with a free export for set 2 of 3, have 1: zone-c (1 free)");
}

}  // namespace
}  // namespace dst::cluster::placement_test
