#include "aggregator/cluster/catalog.h"

#include <doctest/doctest.h>

namespace dst::cluster::catalog_test {
namespace {

TEST_CASE("catalog records go to JSON and back") {
  const CatalogKeys keys("/dst");
  CHECK(keys.Export("nbd://n1:10809/e") == "/dst/exports/nbd://n1:10809/e");
  CHECK(keys.Volume("vol") == "/dst/volumes/vol");
  CHECK(keys.Owner("vol") == "/dst/owners/vol");

  ExportRecord e{"nbd://n1/e", "zone-a", 1 << 20, true, "vol"};
  CHECK(EncodeExport(e) ==
        R"({"drained":true,"size":1048576,"uri":"nbd://n1/e","volume":"vol","zone":"zone-a"})");
  ExportRecord e2;
  REQUIRE(DecodeExport("k", EncodeExport(e), &e2).ok());
  CHECK(e2.uri == e.uri);
  CHECK(e2.zone == e.zone);
  CHECK(e2.size == e.size);
  CHECK(e2.drained);
  CHECK(e2.volume == "vol");
  e.volume.clear();
  CHECK(EncodeExport(e).find(R"("volume":null)") != std::string::npos);
  REQUIRE(DecodeExport("k", EncodeExport(e), &e2).ok());
  CHECK(e2.volume.empty());

  VolumeRecord v;
  v.name = "vol";
  v.uuid = "0123";
  v.layout = "mirror";
  v.copies = 2;
  v.size = 4096;
  v.members = {"nbd://a", "nbd://b"};
  v.state = "ready";
  v.created = 7;
  v.creator_lease = 99;
  VolumeRecord v2;
  REQUIRE(DecodeVolume("k", EncodeVolume(v), &v2).ok());
  CHECK(v2.members == v.members);
  CHECK(v2.uuid == "0123");
  CHECK(v2.copies == 2);
  CHECK(v2.state == "ready");
  CHECK(v2.creator_lease == 99);

  OwnerRecord o{"host-b", 42, 9, 77, "10.0.0.2:10809"};
  OwnerRecord o2;
  REQUIRE(DecodeOwner("k", EncodeOwner(o), &o2).ok());
  CHECK(DescribeOwner(o2) == "host-b (pid 42)");
  CHECK(o2.lease == 77);
  CHECK(o2.nbd == "10.0.0.2:10809");
  // An owner that advertises no address, and a record written before the field existed.
  o.nbd.clear();
  CHECK(EncodeOwner(o).find(R"("nbd":null)") != std::string::npos);
  REQUIRE(DecodeOwner("k", R"({"host":"h","pid":1,"since":2,"lease":3})", &o2).ok());
  CHECK(o2.nbd.empty());
}

TEST_CASE("catalog values that are not records are refused naming the key") {
  ExportRecord e;
  Status s = DecodeExport("/dst/exports/x", "not json", &e);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().rfind("catalog key /dst/exports/x: not an export record (", 0) == 0);
  s = DecodeExport("/dst/exports/x", R"({"uri":"x","zone":3,"size":1})", &e);
  CHECK(s.err() == EINVAL);
  VolumeRecord v;
  CHECK(DecodeVolume("k", "[1]", &v).err() == EINVAL);
  // Fields a newer dst may add are ignored.
  OwnerRecord o;
  CHECK(DecodeOwner("k", R"({"host":"h","pid":1,"new":true})", &o).ok());
}

}  // namespace
}  // namespace dst::cluster::catalog_test
