#include "aggregator/cluster/owner_endpoint.h"

#include <doctest/doctest.h>

namespace dst::cluster::owner_endpoint_test {
namespace {

constexpr const char* kUrl = "etcd://127.0.0.1:2379/dst";

TEST_CASE("map --cluster: the owner's NBD address, or why there is none") {
  VolumeRecord ready;
  ready.name = "vol0";
  ready.state = "ready";
  const OwnerRecord owner{"host-a", 42, 1, 7, "10.0.0.1:10809"};

  CHECK(CheckOwnerEndpoint("vol0", kUrl, ready, owner).ok());

  Status s = CheckOwnerEndpoint("vol0", kUrl, std::nullopt, std::nullopt);
  CHECK(s.err() == ENOENT);
  CHECK(s.message() == "volume vol0 is not in the catalog at etcd://127.0.0.1:2379/dst");

  VolumeRecord creating = ready;
  creating.state = "creating";
  s = CheckOwnerEndpoint("vol0", kUrl, creating, std::nullopt);
  CHECK(s.err() == EAGAIN);
  CHECK(s.message() == "volume vol0 is being created (state creating): not served yet");

  s = CheckOwnerEndpoint("vol0", kUrl, ready, std::nullopt);
  CHECK(s.err() == ENOENT);
  CHECK(s.message() ==
        "volume vol0 has no owner now: no serve --cluster holds it (start one, or wait for a "
        "--takeover)");

  OwnerRecord silent = owner;
  silent.nbd.clear();
  s = CheckOwnerEndpoint("vol0", kUrl, ready, silent);
  CHECK(s.err() == EADDRNOTAVAIL);
  CHECK(s.message() ==
        "volume vol0 is owned by host-a (pid 42), which advertises no NBD address (its serve "
        "--cluster has neither a TCP --listen nor --advertise)");
}

TEST_CASE("serve --cluster advertises --advertise, else its first TCP listen address") {
  std::string out;
  REQUIRE(AdvertisedNbdAddress("db.example:10809", {"0.0.0.0:1"}, "h", &out).ok());
  CHECK(out == "db.example:10809");
  REQUIRE(AdvertisedNbdAddress("[fd00::1]:10809", {}, "h", &out).ok());
  CHECK(out == "[fd00::1]:10809");
  REQUIRE(AdvertisedNbdAddress("", {"10.0.0.5:10809", "127.0.0.1:10810"}, "h", &out).ok());
  CHECK(out == "10.0.0.5:10809");
  // A wildcard is no address to connect to: the host's name stands for it.
  REQUIRE(AdvertisedNbdAddress("", {"0.0.0.0:10809"}, "host-a", &out).ok());
  CHECK(out == "host-a:10809");
  REQUIRE(AdvertisedNbdAddress("", {"[::]:10811"}, "host-a", &out).ok());
  CHECK(out == "host-a:10811");
  // Unix sockets only: nothing to advertise.
  out = "x";
  REQUIRE(AdvertisedNbdAddress("", {}, "host-a", &out).ok());
  CHECK(out.empty());
  for (const char* bad : {"db.example", "db:0", "db:65536", ":10809", "fd00::1:10809", "a b:1"}) {
    const Status s = AdvertisedNbdAddress(bad, {}, "h", &out);
    CHECK(s.err() == EINVAL);
    CHECK(s.message() == std::string("--advertise ") + bad + ": expected HOST:PORT or [V6]:PORT");
  }
}

}  // namespace
}  // namespace dst::cluster::owner_endpoint_test
