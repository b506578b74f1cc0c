#include "aggregator/map/map_command.h"

#include <cerrno>

#include <doctest/doctest.h>
#include <CLI/CLI.hpp>

#include "aggregator/map/fake_sys_block.h"
#include "aggregator/map/unmap_command.h"

namespace dst::aggregator::map::map_command_test {
namespace {

// Parses `args` after "dst-aggregator map"; false when CLI11 refuses them.
bool ParseMap(std::vector<std::string> args, MapArgs* out) {
  CLI::App app;
  AddMapCommand(app, out);
  args.insert(args.begin(), "map");
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError&) {
    return false;
  }
  return true;
}

TEST_CASE("map: the defaults fit dst") {
  MapArgs args;
  REQUIRE(ParseMap({"vol0"}, &args));
  CHECK(args.volume == "vol0");
  CHECK(args.device.empty());
  CHECK(args.connections == 0);  // the aggregator's event loops, or kDefaultConnections
  CHECK(!args.timeout_seconds);  // DefaultTimeout
  CHECK(args.block_size == 4096);
  CHECK(!args.read_only);
  CHECK(CheckMapArgs(args).ok());
  CHECK(kDefaultConnections == 1);
}

TEST_CASE("map: the default timeout is above the aggregator's retry window") {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  CHECK(DefaultTimeout(std::nullopt) == seconds(120));  // twice the default window of 60 s
  CHECK(DefaultTimeout(milliseconds(60000)) == seconds(120));
  CHECK(DefaultTimeout(milliseconds(5000)) == seconds(120));
  CHECK(DefaultTimeout(milliseconds(300000)) == seconds(360));
  CHECK(DefaultTimeout(milliseconds(90500)) == seconds(151));
}

TEST_CASE("map: every option") {
  MapArgs args;
  REQUIRE(ParseMap({"--device", "/dev/nbd3", "--connections", "2", "--timeout", "0", "--block-size",
                    "512", "--read-only", "--connect", "10.0.2.2:10809", "vol0"},
                   &args));
  CHECK(args.device == "/dev/nbd3");
  CHECK(args.connections == 2);
  CHECK(args.timeout_seconds == 0u);
  CHECK(args.block_size == 512);
  CHECK(args.read_only);
  CHECK(args.connect == "10.0.2.2:10809");
  CHECK(CheckMapArgs(args).ok());
}

TEST_CASE("map: refused arguments") {
  MapArgs args;
  CHECK(!ParseMap({}, &args));                                           // no volume
  CHECK(!ParseMap({"--connections", "0", "vol0"}, &args));               // out of range
  CHECK(!ParseMap({"--connect", "a:1", "--socket", "/s", "v"}, &args));  // exclusive
  CHECK(!ParseMap({"--control", "/c", "--connect", "a:1", "v"}, &args));

  MapArgs bad;
  bad.volume = "v";
  bad.device = "/dev/sda";
  CHECK(CheckMapArgs(bad).message() == "--device /dev/sda: expected /dev/nbdN");
  bad.device = "";
  bad.block_size = 8192;
  CHECK(CheckMapArgs(bad).message() ==
        "--block-size 8192: the kernel takes a power of two from 512 to 4096");
  bad.block_size = 1000;
  CHECK(CheckMapArgs(bad).err() == EINVAL);
}

TEST_CASE("map: an unreachable aggregator is one error, before the kernel is asked") {
  MapArgs args;
  REQUIRE(ParseMap({"--socket", "/nonexistent/agg.sock", "vol0"}, &args));
  CHECK(RunMap(args, "/nonexistent/sys/block") == 1);
}

TEST_CASE("map: a device that is connected already is busy; unmap refuses others' devices") {
  FakeSysBlock sys;
  sys.Device("nbd0", 10, "dst:vol0@127.0.0.1:10809", 2048, 1);
  sys.Device("nbd1", 11, "", 2048, 1);
  sys.Device("nbd2", std::nullopt, "", 0, 1);
  sys.Device("nbd3", 12, "dst:vol1@unix:/run/a.sock", 2048, 1);
  sys.Device("nbd4", 13, "dst:vol1@unix:/run/a.sock", 2048, 1);
  CHECK(CheckDeviceFree(sys.root(), 0).message() ==
        "/dev/nbd0 is busy: mapped to volume vol0 at 127.0.0.1:10809");
  CHECK(CheckDeviceFree(sys.root(), 1).message() ==
        "/dev/nbd1 is busy: mapped to '' by another client");
  CHECK(CheckDeviceFree(sys.root(), 2).ok());
  CHECK(CheckDeviceFree(sys.root(), 7).ok());

  MappedDevice d;
  REQUIRE(FindMappedDevice(sys.root(), "/dev/nbd0", &d).ok());
  CHECK(d.index == 0);
  REQUIRE(FindMappedDevice(sys.root(), "vol0", &d).ok());
  CHECK(d.device == "/dev/nbd0");
  CHECK(FindMappedDevice(sys.root(), "/dev/nbd1", &d).message() ==
        "/dev/nbd1 was not mapped by dst-aggregator (backend ''): use the tool that attached it");
  CHECK(FindMappedDevice(sys.root(), "/dev/nbd2", &d).message() == "/dev/nbd2 is not connected");
  CHECK(FindMappedDevice(sys.root(), "vol1", &d).message() ==
        "volume vol1 is mapped to /dev/nbd3, /dev/nbd4: name the device to unmap");
  CHECK(FindMappedDevice(sys.root(), "vol9", &d).message() == "volume vol9 is not mapped here");
}

}  // namespace
}  // namespace dst::aggregator::map::map_command_test
