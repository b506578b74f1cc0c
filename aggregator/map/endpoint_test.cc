#include "aggregator/map/endpoint.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <doctest/doctest.h>

#include "tests/harness/temp_dir.h"

namespace dst::aggregator::map::endpoint_test {
namespace {

TEST_CASE("ParseTcpEndpoint: HOST:PORT, [V6]:PORT, :PORT for this machine") {
  Endpoint e;
  REQUIRE(ParseTcpEndpoint("10.0.2.2:10809", "--connect", &e).ok());
  CHECK(e == Endpoint::Tcp("10.0.2.2", "10809"));
  CHECK(e.Name() == "10.0.2.2:10809");
  REQUIRE(ParseTcpEndpoint("[::1]:7000", "--connect", &e).ok());
  CHECK(e.host == "::1");
  CHECK(e.Name() == "[::1]:7000");
  REQUIRE(ParseTcpEndpoint(":10809", "--connect", &e).ok());
  CHECK(e.host == "127.0.0.1");

  CHECK(ParseTcpEndpoint("agg", "--connect", &e).message() == "--connect agg: expected HOST:PORT");
  CHECK(ParseTcpEndpoint("agg:0", "--connect", &e).message() == "--connect agg:0: bad port '0'");
  CHECK(ParseTcpEndpoint("agg:99999", "--connect", &e).err() == EINVAL);
  CHECK(Endpoint::Unix("/run/agg.sock").Name() == "unix:/run/agg.sock");
}

TEST_CASE("ParseEndpoints and PickEndpoint: the Unix socket first, a wildcard on the loopback") {
  AggregatorEndpoints a;
  REQUIRE(ParseEndpoints(
              "unix /run/agg.sock\ntcp 0.0.0.0:10809\ntls on\nloops 2\nretry-window-ms 90000\n", &a)
              .ok());
  CHECK(a.retry_window == std::chrono::milliseconds(90000));
  CHECK(a.unix_paths == std::vector<std::string>{"/run/agg.sock"});
  CHECK(a.tcp == std::vector<std::string>{"0.0.0.0:10809"});
  CHECK(a.tls == "on");
  CHECK(a.loops == 2);
  Endpoint e;
  REQUIRE(PickEndpoint(a, &e).ok());
  CHECK(e == Endpoint::Unix("/run/agg.sock"));

  a.unix_paths.clear();
  REQUIRE(PickEndpoint(a, &e).ok());
  CHECK(e.Name() == "127.0.0.1:10809");
  a.tcp = {"[::]:10809"};
  REQUIRE(PickEndpoint(a, &e).ok());
  CHECK(e.Name() == "[::1]:10809");
  a.tcp = {"192.168.1.5:10809"};
  REQUIRE(PickEndpoint(a, &e).ok());
  CHECK(e.Name() == "192.168.1.5:10809");

  a.tcp.clear();
  CHECK(PickEndpoint(a, &e).err() == ENOENT);
  a.tcp = {"127.0.0.1:10809"};
  a.tls = "require";
  const Status s = PickEndpoint(a, &e);
  CHECK(s.err() == EPROTONOSUPPORT);
  CHECK(s.message() ==
        "the aggregator requires TLS (--tls=require), which the kernel's NBD client cannot do: "
        "map needs a listener without TLS");

  CHECK(ParseEndpoints("status ok\n", &a).err() == EPROTO);
  CHECK(ParseEndpoints("loops 0\n", &a).err() == EPROTO);
  REQUIRE(ParseEndpoints("tcp :10809\n", &a).ok());
  CHECK(a.loops == 1);
  CHECK(a.tls == "off");
  CHECK(!a.retry_window);
}

TEST_CASE("ConnectEndpoint: a Unix socket that listens, and one that does not") {
  test::TempDir dir("dst-endpoint");
  const std::string path = dir.path() + "/agg.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 4) == 0);

  int fd = -1;
  REQUIRE(ConnectEndpoint(Endpoint::Unix(path), std::chrono::seconds(2), &fd).ok());
  CHECK(fd >= 0);
  ::close(fd);
  ::close(listener);

  const Status s =
      ConnectEndpoint(Endpoint::Unix(dir.path() + "/none"), std::chrono::seconds(2), &fd);
  CHECK(s.err() == ENOENT);
  CHECK(s.message() ==
        "aggregator at unix:" + dir.path() + "/none unreachable: No such file or directory");
}

}  // namespace
}  // namespace dst::aggregator::map::endpoint_test
