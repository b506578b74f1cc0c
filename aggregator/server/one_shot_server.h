// OneShotServer: a small server for the control socket and the metrics
// endpoint, where each connection carries one request and one response. It
// reads until `terminator` (a line, an HTTP header block), at most
// `max_request` bytes and for at most `timeout`, answers with whatever the
// handler returns, and closes. A client that sends too much, too slowly or
// nothing at all is dropped without affecting others.
//
// At most kMaxConnections are served at once. When they are all taken, a
// new client takes the place of the oldest one still waiting for its
// request (which is closed): clients that connect and say nothing cannot
// hold every place and lock out a scraper or `dst-aggregator status`, which
// send their request at once. Only when every place is busy answering is a
// new client closed at once.
//
// Accept failures pause the accept loop as in Listener (AcceptBackoff).
//
// Threading: the event loop's thread; the handler runs there too.
#pragma once

#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/server/socket.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::server {

class OneShotServer {
 public:
  // `request` excludes the terminator; empty when the client sent nothing.
  using Handler = std::function<std::string(const std::string& request)>;
  // A handler that answers later: `answer` once, on the event loop's thread. The request's
  // deadline stops when the request is complete: the handler bounds its own time, and the
  // timeout counts again for sending the answer. A client gone meanwhile gets nothing.
  using Answer = std::function<void(std::string response)>;
  using AsyncHandler = std::function<void(const std::string& request, Answer answer)>;

  static constexpr size_t kMaxConnections = 16;

  OneShotServer(asio::io_context& io, std::string terminator, size_t max_request,
                std::chrono::milliseconds timeout, Handler handler);
  OneShotServer(asio::io_context& io, std::string terminator, size_t max_request,
                std::chrono::milliseconds timeout, AsyncHandler handler);
  ~OneShotServer();

  // Binds `path` (replacing a stale socket, refusing one a live process
  // answers on: EADDRINUSE, and anything that is not a socket: EEXIST) and
  // chmods it to `mode`.
  Status ListenUnix(const std::string& path, unsigned mode);
  Status ListenTcp(const std::string& host_port);
  // Stops accepting and removes the Unix socket it created.
  void Close();

  // Connections being served now.
  size_t connections() const { return sessions_.size(); }

 private:
  struct Session;
  using Sessions = std::list<std::shared_ptr<Session>>;

  template <typename Acceptor>
  asio::awaitable<void> Accept(Acceptor& acceptor, std::string where);
  // Serves the client, making room for it first if every place is taken.
  void Admit(Socket socket);
  asio::awaitable<void> Serve(std::shared_ptr<Session> session);

  asio::io_context& io_;
  std::string terminator_;
  size_t max_request_;
  std::chrono::milliseconds timeout_;
  AsyncHandler handler_;
  Sessions sessions_;  // oldest first
  std::string unix_path_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> unix_;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp_;
  Lifetime lifetime_;  // the accept loops' check that the server is still there
};

}  // namespace dst::server
