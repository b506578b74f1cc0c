// OneShotServer with a handler that answers later: the answer may take longer than the request's
// deadline, and a client gone before it comes costs nothing.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "aggregator/server/one_shot_server.h"

namespace dst::server::one_shot_server_test {
namespace {

using namespace std::chrono_literals;

constexpr auto kDeadline = 100ms;

int ConnectTo(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  return fd;
}

std::string ReadAll(int fd) {
  std::string text;
  char buffer[256];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;)
    text.append(buffer, static_cast<size_t>(n));
  return text;
}

struct TempSocket {
  TempSocket() {
    REQUIRE(::mkdtemp(dir) != nullptr);
    path = std::string(dir) + "/control.sock";
  }
  ~TempSocket() { ::rmdir(dir); }
  char dir[32] = "/tmp/dst-oneshot-async.XXXXXX";
  std::string path;
};

TEST_CASE("an answer that comes later than the request's deadline is sent") {
  TempSocket socket;
  asio::io_context io;
  asio::steady_timer later(io);
  std::string asked;
  OneShotServer server(
      io, "\n", 256, kDeadline, [&](const std::string& request, OneShotServer::Answer answer) {
        asked = request;
        later.expires_after(3 * kDeadline);
        later.async_wait(
            [answer = std::move(answer)](const asio::error_code&) { answer("ok: later\n"); });
      });
  REQUIRE(server.ListenUnix(socket.path, 0600).ok());
  const int client = ConnectTo(socket.path);
  REQUIRE(::write(client, "member add x\n", 13) == 13);
  std::string answer;
  std::thread reader([&] { answer = ReadAll(client); });
  io.run_for(6 * kDeadline);
  server.Close();
  io.run_for(kDeadline);
  reader.join();
  ::close(client);
  CHECK(asked == "member add x");
  CHECK(answer == "ok: later\n");
  CHECK(server.connections() == 0);
}

TEST_CASE("a client gone before the answer comes: the answer goes nowhere") {
  TempSocket socket;
  asio::io_context io;
  OneShotServer::Answer pending;
  OneShotServer server(
      io, "\n", 256, kDeadline,
      [&](const std::string&, OneShotServer::Answer answer) { pending = std::move(answer); });
  REQUIRE(server.ListenUnix(socket.path, 0600).ok());
  const int client = ConnectTo(socket.path);
  REQUIRE(::write(client, "x\n", 2) == 2);
  io.run_for(kDeadline / 2);
  REQUIRE(pending);
  ::close(client);
  io.run_for(kDeadline / 2);
  pending("ok: too late\n");
  pending("ok: twice\n");  // a second answer is ignored
  io.run_for(2 * kDeadline);
  CHECK(server.connections() == 0);
  server.Close();
  io.run_for(kDeadline);
}

}  // namespace
}  // namespace dst::server::one_shot_server_test
