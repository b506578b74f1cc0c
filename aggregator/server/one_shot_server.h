// OneShotServer: a small server for the control socket and the metrics
// endpoint, where each connection carries one request and one response. It
// reads until `terminator` (a line, an HTTP header block), at most
// `max_request` bytes and for at most `timeout`, answers with whatever the
// handler returns, and closes. A client that sends too much, too slowly or
// nothing at all is dropped without affecting others; connections beyond
// kMaxConnections are closed at once.
//
// Threading: the event loop's thread; the handler runs there too.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "common/status.h"

namespace dst::server {

class OneShotServer {
 public:
  // `request` excludes the terminator; empty when the client sent nothing.
  using Handler = std::function<std::string(const std::string& request)>;

  static constexpr size_t kMaxConnections = 16;

  OneShotServer(asio::io_context& io, std::string terminator, size_t max_request,
                std::chrono::milliseconds timeout, Handler handler);
  ~OneShotServer();

  // Binds `path` (replacing a stale socket, refusing one a live process
  // answers on: EADDRINUSE) and chmods it to `mode`.
  Status ListenUnix(const std::string& path, unsigned mode);
  Status ListenTcp(const std::string& host_port);
  // Stops accepting and removes the Unix socket it created.
  void Close();

 private:
  template <typename Acceptor>
  asio::awaitable<void> Accept(Acceptor& acceptor);
  template <typename Socket>
  asio::awaitable<void> Serve(Socket socket);

  asio::io_context& io_;
  std::string terminator_;
  size_t max_request_;
  std::chrono::milliseconds timeout_;
  Handler handler_;
  size_t connections_ = 0;
  std::string unix_path_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> unix_;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp_;
};

}  // namespace dst::server
