#include "aggregator/map/mapped_devices.h"

#include <doctest/doctest.h>

#include "aggregator/map/fake_sys_block.h"

namespace dst::aggregator::map::mapped_devices_test {
namespace {

TEST_CASE("BackendId: formatted and parsed back, with the volume's special bytes escaped") {
  const BackendId plain{"vol0", "127.0.0.1:10809"};
  CHECK(FormatBackendId(plain) == "dst:vol0@127.0.0.1:10809");
  CHECK(ParseBackendId("dst:vol0@127.0.0.1:10809") == plain);

  const BackendId odd{"a@b 50%", "unix:/run/dst/a@b#1.sock", 2};
  CHECK(FormatBackendId(odd) == "dst:a%40b%2050%25@unix:/run/dst/a@b#1.sock#2");
  CHECK(ParseBackendId(FormatBackendId(odd)) == odd);
  const BackendId two{"vol0", "10.0.2.2:10809", 2};
  CHECK(FormatBackendId(two) == "dst:vol0@10.0.2.2:10809#2");
  CHECK(ParseBackendId("dst:vol0@10.0.2.2:10809#2") == two);
  CHECK(ParseBackendId("dst:vol0@unix:/a#b")->endpoint == "unix:/a#b");
}

TEST_CASE("BackendId: identifiers that are not dst's are not parsed") {
  for (const char* text : {"", "vol0@host:1", "dst:", "dst:vol0", "dst:@host:1", "dst:vol0@",
                           "dst:bad%4@h:1", "dst:bad%zz@h:1", "dst:v@#2", "rbd:pool/image"}) {
    CAPTURE(text);
    CHECK(!ParseBackendId(text));
  }
}

TEST_CASE("NbdIndex") {
  CHECK(NbdIndex("/dev/nbd0") == 0);
  CHECK(NbdIndex("nbd15") == 15);
  CHECK(!NbdIndex("/dev/nbd"));
  CHECK(!NbdIndex("/dev/nbd0p1"));
  CHECK(!NbdIndex("/dev/sda"));
  CHECK(!NbdIndex("loop0"));
}

TEST_CASE("ListMappedDevices: connected NBD devices from sysfs, by index") {
  FakeSysBlock sys;
  sys.Device("nbd10", 4321, "dst:vol0@unix:/run/agg.sock#2", 81920, 1);
  sys.Device("nbd3", 99, "", 2048, 4);  // another client's, 4 queues
  sys.Device("nbd2", 1234, "dst:mirror0@10.0.2.2:10809", 131072, 1);
  sys.Device("nbd0", std::nullopt, "", 0, 1);  // not connected
  sys.Device("nbd1", 99, "", 2048, 1);         // another client's
  sys.Device("sda", std::nullopt, "", 1000, 1);

  std::vector<MappedDevice> devices = ListMappedDevices(sys.root());
  REQUIRE(devices.size() == 4);
  CHECK(devices[0].device == "/dev/nbd1");
  CHECK(!devices[0].dst);
  CHECK(devices[2].device == "/dev/nbd3");
  CHECK(devices[2].connections == 4);
  devices.erase(devices.begin() + 2);
  CHECK(devices[1].device == "/dev/nbd2");
  CHECK(devices[1].index == 2);
  CHECK(devices[1].dst == BackendId{"mirror0", "10.0.2.2:10809"});
  CHECK(devices[1].size_bytes == 64u << 20);
  CHECK(devices[1].connections == 1);
  CHECK(devices[1].pid == 1234);
  CHECK(devices[2].device == "/dev/nbd10");
  CHECK(devices[2].dst == BackendId{"vol0", "unix:/run/agg.sock", 2});
  CHECK(devices[2].connections == 2);  // from the identifier
  CHECK(devices[2].size_bytes == 40u << 20);

  CHECK(DevicesOfVolume(devices, "vol0").at(0).device == "/dev/nbd10");
  CHECK(DevicesOfVolume(devices, "nope").empty());
  CHECK(!ReadMappedDevice(sys.root(), 0));
  CHECK(ReadMappedDevice(sys.root(), 2)->device == "/dev/nbd2");
  CHECK(ListMappedDevices(sys.root() + "/missing").empty());

  CHECK(MappedTable(devices) ==
        "DEVICE       VOLUME                 SIZE CONNS      PID  ENDPOINT\n"
        "/dev/nbd2    mirror0              64 MiB     1     1234  10.0.2.2:10809\n"
        "/dev/nbd10   vol0                 40 MiB     2     4321  unix:/run/agg.sock\n");
  CHECK(MappedJson(devices) ==
        "[\n"
        "  {\"device\": \"/dev/nbd2\", \"volume\": \"mirror0\", \"endpoint\": "
        "\"10.0.2.2:10809\", \"size_bytes\": 67108864, \"connections\": 1, \"pid\": 1234},\n"
        "  {\"device\": \"/dev/nbd10\", \"volume\": \"vol0\", \"endpoint\": "
        "\"unix:/run/agg.sock\", \"size_bytes\": 41943040, \"connections\": 2, \"pid\": 4321}\n"
        "]\n");
  CHECK(MappedJson({}) == "[]\n");

  CHECK(WithMappedTable("uptime 1 s\n", devices) == "uptime 1 s\n\n" + MappedTable(devices));
  CHECK(WithMappedTable("uptime 1 s\n", {devices[0]}) == "uptime 1 s\n");  // not dst's
  CHECK(WithMappedTable("error: x\n", devices) == "error: x\n");
  CHECK(WithMappedJson("{\"uptime_seconds\": 1}\n", {}) ==
        "{\"uptime_seconds\": 1,\n \"mapped\": []}\n");
  CHECK(WithMappedJson("{\"a\": 1}\n", {devices[1]}) ==
        "{\"a\": 1,\n \"mapped\": [\n  {\"device\": \"/dev/nbd2\", \"volume\": \"mirror0\", "
        "\"endpoint\": \"10.0.2.2:10809\", \"size_bytes\": 67108864, \"connections\": 1, "
        "\"pid\": 1234}\n]}\n");
}

}  // namespace
}  // namespace dst::aggregator::map::mapped_devices_test
