#include "aggregator/server/listener.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

namespace dst::server::listener_test {
namespace {

using std::chrono::milliseconds;

TEST_CASE("accept failures of the server's pause the loop, doubling up to a second") {
  AcceptBackoff backoff("clients on test");
  const asio::error_code emfile(EMFILE, asio::system_category());
  const milliseconds want[] = {milliseconds(100), milliseconds(200),  milliseconds(400),
                               milliseconds(800), milliseconds(1000), milliseconds(1000)};
  for (const milliseconds pause : want)
    CHECK(backoff.Failed(emfile) == pause);
  backoff.Succeeded();  // works again: the next failure starts over
  CHECK(backoff.Failed(asio::error_code(ENFILE, asio::system_category())) == milliseconds(100));
}

TEST_CASE("a client that gave up in the backlog costs no pause") {
  AcceptBackoff backoff("clients on test");
  CHECK(backoff.Failed(asio::error::connection_aborted) == milliseconds(0));
  CHECK(backoff.Failed(asio::error::interrupted) == milliseconds(0));
  CHECK(backoff.Failed(asio::error_code(ENOBUFS, asio::system_category())) == milliseconds(100));
}

TEST_CASE("clients are counted per IPv4 address and per IPv6 /64") {
  CHECK(AddressKey(asio::ip::make_address("192.0.2.7")) == "192.0.2.7");
  CHECK(AddressKey(asio::ip::make_address("::ffff:192.0.2.7")) == "192.0.2.7");
  CHECK(AddressKey(asio::ip::make_address("2001:db8:1:2:aaaa:bbbb:cccc:dddd")) ==
        "2001:db8:1:2::/64");
  CHECK(AddressKey(asio::ip::make_address("2001:db8:1:2::1")) ==
        AddressKey(asio::ip::make_address("2001:db8:1:2:ffff::9")));
  CHECK(AddressKey(asio::ip::make_address("2001:db8:1:3::1")) != "2001:db8:1:2::/64");
}

TEST_CASE("one address may hold three quarters of the connections unless told otherwise") {
  ConnectionPolicy policy;
  CHECK(policy.PerAddressLimit() == 768);
  policy.max_connections = 20;
  CHECK(policy.PerAddressLimit() == 15);
  policy.max_connections = 1;
  CHECK(policy.PerAddressLimit() == 1);
  policy.max_connections_per_address = 4;
  CHECK(policy.PerAddressLimit() == 4);
}

TEST_CASE("a Unix socket path that holds a file is left alone") {
  char dir[] = "/tmp/dst-listener-test.XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/important.txt";
  std::ofstream(path) << "data";
  asio::io_context io;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor;
  const Status s = OpenUnixAcceptor(io, path, 0600, "listen on " + path, &acceptor);
  CHECK(s.err() == EEXIST);
  CHECK(s.message() == "listen on " + path + ": " + path +
                           " exists and is not a socket; not replacing it (remove it, or choose "
                           "another path)");
  RemoveUnixSocket(path);
  std::string text;
  std::ifstream(path) >> text;
  CHECK(text == "data");
  // A stale socket is replaced, and removed.
  const std::string socket_path = std::string(dir) + "/stale.sock";
  {
    asio::local::stream_protocol::acceptor stale(io, socket_path);
  }  // closed, its file left behind
  REQUIRE(OpenUnixAcceptor(io, socket_path, 0600, "listen", &acceptor).ok());
  acceptor.reset();
  RemoveUnixSocket(socket_path);
  struct stat st {};
  CHECK(::lstat(socket_path.c_str(), &st) != 0);
  std::remove(path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace dst::server::listener_test
