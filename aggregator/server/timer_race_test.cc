// The deadlines of the server's connections against the event loop's one
// race: a deadline that expires in the same reactor pass as the connection's
// last event. Its handler is then already queued when the connection ends,
// and runs after the objects it would touch are gone. Each case makes that
// pass happen for sure (the peer acts, then the loop is not run until the
// deadline has passed), so that AddressSanitizer sees any use after free.
#include <doctest/doctest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "aggregator/server/client_stream.h"
#include "aggregator/server/connection.h"
#include "aggregator/server/one_shot_server.h"
#include "aggregator/server/socket.h"
#include "aggregator/server/tls.h"

namespace dst::server::timer_race_test {
namespace {

using namespace std::chrono_literals;

// Both ends of a connected AF_UNIX stream socketpair: the server's as an
// Asio socket on `io`, the peer's as a plain descriptor the test drives.
struct SocketPair {
  explicit SocketPair(asio::io_context& io) {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    server =
        std::make_unique<Socket>(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    peer = fds[1];
  }
  ~SocketPair() {
    if (peer >= 0) ::close(peer);
  }
  void ClosePeer() {
    ::close(peer);
    peer = -1;
  }

  std::unique_ptr<Socket> server;
  int peer = -1;
};

// Runs what is ready now, without waiting, until nothing is.
void RunReady(asio::io_context& io) {
  while (io.poll() > 0) {
  }
}

// How long a deadline is in these cases, and the rounds in which the setup
// must come off (a loaded machine may stall past the deadline before the
// peer acts; such a round is not counted).
constexpr auto kDeadline = 100ms;
constexpr int kRounds = 3;
constexpr int kAttempts = 10;

TEST_CASE("a client leaving exactly at the handshake deadline") {
  int raced = 0;
  for (int attempt = 0; attempt < kAttempts && raced < kRounds; ++attempt) {
    asio::io_context io;
    SocketPair pair(io);
    ExportRegistry registry;
    InFlightLimits limits;
    ConnectionPolicy policy;
    policy.handshake_timeout = kDeadline;
    auto connection = std::make_shared<ClientConnection>(std::move(*pair.server), registry, limits,
                                                         policy, "race");
    asio::co_spawn(io, connection->Run(), asio::detached);
    RunReady(io);        // greeted; now waiting for the client's flags
    connection.reset();  // from here on the connection keeps itself alive, as the listener's do
    const bool waiting = policy.open_connections == 1;
    pair.ClosePeer();
    std::this_thread::sleep_for(kDeadline + 50ms);  // both are ready in one pass
    io.run();
    CHECK(policy.open_connections == 0);
    raced += waiting;
  }
  CHECK(raced == kRounds);
}

TEST_CASE("a one-shot client leaving exactly at the query deadline") {
  char dir[] = "/tmp/dst-oneshot-race.XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/control.sock";
  int raced = 0;
  for (int attempt = 0; attempt < kAttempts && raced < kRounds; ++attempt) {
    asio::io_context io;
    int answered = 0;
    OneShotServer server(io, "\n", 256, kDeadline, [&answered](const std::string&) {
      ++answered;
      return std::string("ok\n");
    });
    REQUIRE(server.ListenUnix(path, 0600).ok());
    const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    RunReady(io);  // accepted; waiting for the query, its deadline running
    const bool waiting = server.connections() == 1;
    ::close(client);  // gone without a word
    std::this_thread::sleep_for(kDeadline + 50ms);
    RunReady(io);
    CHECK(server.connections() == 0);
    server.Close();
    io.run();
    CHECK(answered == 0);
    raced += waiting;
  }
  CHECK(raced == kRounds);
  ::rmdir(dir);
}

// A TLS client on a plain descriptor, blocking, with the PSK identity
// "alice" and a 16-byte key of 0x11.
class PskClient {
 public:
  explicit PskClient(int fd) : ctx_(SSL_CTX_new(TLS_client_method())) {
    SSL_CTX_set_psk_client_callback(ctx_, Callback);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd);
  }
  ~PskClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  bool Connect() { return SSL_connect(ssl_) == 1; }
  // Reads until the server's close_notify; false if something else ends the stream.
  bool AwaitCloseNotify() {
    char byte;
    while (SSL_read(ssl_, &byte, 1) > 0) {
    }
    return SSL_get_error(ssl_, 0) == SSL_ERROR_ZERO_RETURN;
  }
  void SendCloseNotify() { SSL_shutdown(ssl_); }

 private:
  static unsigned int Callback(SSL*, const char*, char* identity, unsigned int max_identity,
                               unsigned char* psk, unsigned int max_psk) {
    std::snprintf(identity, max_identity, "alice");
    if (max_psk < 16) return 0;
    std::memset(psk, 0x11, 16);
    return 16;
  }

  SSL_CTX* ctx_;
  SSL* ssl_;
};

TEST_CASE("a TLS client answering close_notify exactly at the give-up time") {
  char dir[] = "/tmp/dst-close-notify.XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string psk_path = std::string(dir) + "/keys.psk";
  std::ofstream(psk_path) << "alice:11111111111111111111111111111111\n";
  REQUIRE(::chmod(psk_path.c_str(), 0600) == 0);
  TlsConfig config;
  config.mode = TlsMode::kRequire;
  config.psk_file = psk_path;
  std::unique_ptr<ServerTls> tls;
  REQUIRE(ServerTls::Create(config, &tls).ok());
  for (int round = 0; round < 2; ++round) {
    asio::io_context io;
    SocketPair pair(io);
    auto stream = std::make_unique<ClientStream>(std::move(*pair.server));
    PskClient client(pair.peer);
    bool client_ok = false;                 // read only after the join
    std::atomic<bool> client_done = false;  // polled by the loop below while the client runs
    std::thread client_thread([&] {
      client_ok = client.Connect() && client.AwaitCloseNotify();
      client_done = true;
    });
    bool server_done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          const Status status = co_await stream->StartTls(tls->context());
          CHECK_MESSAGE(status.ok(), status.message());
          // The server hangs up: close_notify, then a wait for the client's.
          co_await stream->Shutdown();
          stream.reset();  // as a connection does once it has shut down
          server_done = true;
        },
        asio::detached);
    // Until the client has the server's close_notify: the server now waits for the answer.
    for (int i = 0; i < 2000 && !client_done; ++i)
      io.run_one_for(std::chrono::milliseconds(5));
    client_thread.join();
    REQUIRE(client_ok);
    REQUIRE_FALSE(server_done);
    client.SendCloseNotify();
    std::this_thread::sleep_for(1100ms);  // past the give-up time: both are ready in one pass
    io.run();
    CHECK(server_done);
  }
  std::remove(psk_path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace dst::server::timer_race_test
