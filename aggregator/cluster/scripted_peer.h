// ScriptedPeer: for the cluster's unit tests, an HTTP server on a loopback port that accepts one
// connection, reads one request (headers and Content-Length body) and then follows its script:
// writes the given pieces with a pause between them (so that the client reads them separately)
// and closes, or says nothing until Stop(). Runs on the test's io_context; header-only.
#pragma once

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

namespace dst::cluster {

class ScriptedPeer {
 public:
  enum class Then { kAnswer, kSilence };

  explicit ScriptedPeer(asio::io_context& io)
      : acceptor_(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        silence_(io) {}

  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port()); }
  // The request as received ("" if nobody connected).
  const std::string& request() const { return request_; }
  bool connected() const { return connected_; }

  void Start(Then then, std::vector<std::string> writes = {}) {
    asio::co_spawn(acceptor_.get_executor(), Serve(then, std::move(writes)), asio::detached);
  }

  // Ends the silence and stops accepting; run the io_context afterwards to let the peer finish.
  void Stop() {
    silence_.cancel();
    asio::error_code ignored;
    acceptor_.close(ignored);
  }

 private:
  static constexpr auto kAsTuple = asio::experimental::as_tuple(asio::use_awaitable);

  bool RequestComplete() const {
    const size_t end = request_.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    size_t length = 0;
    if (const size_t at = request_.find("\r\nContent-Length: ");
        at != std::string::npos && at < end)
      length = std::strtoul(request_.c_str() + at + 18, nullptr, 10);
    return request_.size() >= end + 4 + length;
  }

  asio::awaitable<void> Serve(Then then, std::vector<std::string> writes) {
    auto [accept_ec, socket] = co_await acceptor_.async_accept(kAsTuple);
    if (accept_ec) co_return;
    connected_ = true;
    char chunk[4096];
    while (!RequestComplete()) {
      auto [ec, n] = co_await socket.async_read_some(asio::buffer(chunk), kAsTuple);
      if (ec) co_return;
      request_.append(chunk, n);
    }
    if (then == Then::kSilence) {
      silence_.expires_after(std::chrono::seconds(30));
      co_await silence_.async_wait(kAsTuple);
      co_return;
    }
    for (const std::string& w : writes) {
      co_await asio::async_write(socket, asio::buffer(w), kAsTuple);
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(10));
      co_await pause.async_wait(kAsTuple);
    }
    asio::error_code ignored;
    socket.shutdown(asio::socket_base::shutdown_both, ignored);
  }

  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer silence_;
  std::string request_;
  bool connected_ = false;
};

}  // namespace dst::cluster
