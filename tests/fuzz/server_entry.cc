// The fuzz targets' only calls into the server's API. When the signatures of
// Negotiate, ClientConnection or ServerTls change, this file is the one to
// adapt.

#include <unistd.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "aggregator/server/client_stream.h"
#include "aggregator/server/connection.h"
#include "aggregator/server/handshake.h"
#include "aggregator/server/tls.h"
#include "tests/fuzz/fuzz_driver.h"

namespace dst::fuzz {

asio::awaitable<Status> NegotiateOn(server::Socket socket, ServerState& state,
                                    server::Negotiated* out) {
  server::ClientStream stream(std::move(socket));
  Status status = co_await server::Negotiate(stream, state.registry, state.policy.tls, out);
  stream.Close();
  co_return status;
}

void SpawnConnection(server::Socket socket, ServerState& state) {
  const auto executor = socket.get_executor();
  auto connection = std::make_shared<server::ClientConnection>(std::move(socket), state.registry,
                                                               state.limits, state.policy, "fuzz");
  // As the listener does, but an exception escaping the connection is
  // rethrown (a crash with this input) instead of vanishing in `detached`.
  asio::co_spawn(executor, connection->Run(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
}

namespace {

std::unique_ptr<server::ServerTls> MakeTls(server::TlsMode mode, const std::string& psk_file) {
  server::TlsConfig config;
  config.mode = mode;
  config.psk_file = psk_file;
  std::unique_ptr<server::ServerTls> tls;
  const Status status = server::ServerTls::Create(config, &tls);
  if (!status.ok()) {
    std::fprintf(stderr, "fuzz: %s\n", status.message().c_str());
    Fail("cannot set up TLS");
  }
  return tls;
}

// The key does not matter: no fuzz input can finish a TLS handshake.
std::string WritePskFile() {
  char path[] = "/tmp/dst-fuzz-psk.XXXXXX";
  const int fd = ::mkstemp(path);
  const char line[] = "fuzz:00112233445566778899aabbccddeeff\n";
  if (fd < 0 || ::write(fd, line, sizeof line - 1) != sizeof line - 1) Fail("writing a PSK file");
  ::close(fd);
  return path;
}

struct TlsContexts {
  TlsContexts() {
    const std::string psk_file = WritePskFile();
    on = MakeTls(server::TlsMode::kOn, psk_file);
    require = MakeTls(server::TlsMode::kRequire, psk_file);
    ::unlink(psk_file.c_str());
  }
  std::unique_ptr<server::ServerTls> on, require;
};

}  // namespace

server::ServerTls* TlsFor(server::TlsMode mode) {
  if (mode == server::TlsMode::kOff) return nullptr;
  // Made once: building a context per input would cost more than the input.
  static const TlsContexts contexts;
  return mode == server::TlsMode::kOn ? contexts.on.get() : contexts.require.get();
}

}  // namespace dst::fuzz
