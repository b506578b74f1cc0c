// Listeners: accept clients on TCP and Unix sockets and run a
// ClientConnection for each, up to ConnectionPolicy::max_connections at once
// (a client over the bound is accepted and closed at once, so it sees a
// disconnect rather than waiting in the backlog). Binding happens in Listen*(), synchronously at
// start-up, so that a busy port is reported before serving begins.
//
// Threading: the accept loops run on the event loop.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aggregator/server/connection.h"

namespace dst::server {

// A TCP acceptor listening on HOST:PORT (address reuse on, so a restart does
// not wait for TIME_WAIT); errors name the address.
Status OpenTcpAcceptor(asio::io_context& io, const std::string& host_port,
                       std::unique_ptr<asio::ip::tcp::acceptor>* out);

// A Unix socket acceptor listening on `path`, which it first unlinks (the
// caller has checked that nobody listens there: UnixSocketInUse), chmodded to
// `mode` unless 0. Errors read "CONTEXT: reason".
Status OpenUnixAcceptor(asio::io_context& io, const std::string& path, unsigned mode,
                        const std::string& context,
                        std::unique_ptr<asio::local::stream_protocol::acceptor>* out);

// True when a process accepts connections on the Unix socket `path` now.
bool UnixSocketInUse(const std::string& path);

// "HOST:PORT" or "[V6]:PORT" (an empty HOST is every address); EINVAL naming
// --listen otherwise.
Status ParseHostPort(const std::string& text, asio::ip::tcp::endpoint* out);

class Listener {
 public:
  Listener(asio::io_context& io, const ExportRegistry& registry, InFlightLimits& limits,
           ConnectionPolicy& policy)
      : io_(io), registry_(registry), limits_(limits), policy_(policy) {}
  // Closes, so that a server that fails to start leaves no socket behind.
  ~Listener() { Close(); }

  // "HOST:PORT" or "[V6]:PORT".
  Status ListenTcp(const std::string& host_port);
  // Replaces a stale socket file left by a previous run; EADDRINUSE when a
  // live process listens there.
  Status ListenUnix(const std::string& path);
  // Stops accepting and removes the Unix sockets; connections already open
  // go on.
  void Close();

 private:
  asio::awaitable<void> AcceptTcp(asio::ip::tcp::acceptor& acceptor);
  asio::awaitable<void> AcceptUnix(asio::local::stream_protocol::acceptor& acceptor);
  void Spawn(Socket socket, std::string peer);

  asio::io_context& io_;
  const ExportRegistry& registry_;
  InFlightLimits& limits_;
  ConnectionPolicy& policy_;
  // One acceptor per --listen / --unix address; never moved once accepting.
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> tcp_;
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> unix_;
  std::vector<std::string> unix_paths_;
};

}  // namespace dst::server
