#include "aggregator/server/one_shot_server.h"

#include <sys/un.h>
#include <unistd.h>

#include "aggregator/server/listener.h"
#include "aggregator/server/socket.h"
#include "common/log.h"

namespace dst::server {

OneShotServer::OneShotServer(asio::io_context& io, std::string terminator, size_t max_request,
                             std::chrono::milliseconds timeout, Handler handler)
    : io_(io),
      terminator_(std::move(terminator)),
      max_request_(max_request),
      timeout_(timeout),
      handler_(std::move(handler)) {}

OneShotServer::~OneShotServer() {
  Close();
}

Status OneShotServer::ListenUnix(const std::string& path, unsigned mode) {
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    return Status::Invalid("control socket " + path + ": path too long");
  if (UnixSocketInUse(path))
    return Status::Error(EADDRINUSE, "control socket " + path + " is in use by another process");
  DST_RETURN_IF_ERROR(OpenUnixAcceptor(io_, path, mode, "control socket " + path, &unix_));
  unix_path_ = path;
  asio::co_spawn(io_, Accept(*unix_), asio::detached);
  return Status::Ok();
}

Status OneShotServer::ListenTcp(const std::string& host_port) {
  DST_RETURN_IF_ERROR(OpenTcpAcceptor(io_, host_port, &tcp_));
  asio::co_spawn(io_, Accept(*tcp_), asio::detached);
  return Status::Ok();
}

void OneShotServer::Close() {
  asio::error_code ignored;
  if (tcp_) tcp_->close(ignored);
  if (unix_ && unix_->is_open()) {
    unix_->close(ignored);
    ::unlink(unix_path_.c_str());
  }
}

template <typename Acceptor>
asio::awaitable<void> OneShotServer::Accept(Acceptor& acceptor) {
  while (acceptor.is_open()) {
    typename Acceptor::protocol_type::socket socket(io_);
    auto [ec] = co_await acceptor.async_accept(socket, kAsTuple);
    if (ec == asio::error::operation_aborted) break;
    if (ec) {
      LOG_WARNING("accept: %s", ec.message().c_str());
      continue;
    }
    if (connections_ >= kMaxConnections) continue;  // closed by going out of scope
    asio::co_spawn(io_, Serve(std::move(socket)), asio::detached);
  }
}

template <typename Socket>
asio::awaitable<void> OneShotServer::Serve(Socket socket) {
  ++connections_;
  // The deadline closes the socket, which ends any read or write pending.
  asio::steady_timer deadline(io_, timeout_);
  deadline.async_wait([&socket](const asio::error_code& ec) {
    asio::error_code ignored;
    if (!ec) socket.close(ignored);
  });
  std::string request;
  char chunk[1024];
  size_t end = std::string::npos;
  while (end == std::string::npos && request.size() <= max_request_) {
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(chunk), kAsTuple);
    if (ec) break;
    request.append(chunk, n);
    end = request.find(terminator_);
  }
  if (end != std::string::npos) {
    const std::string response = handler_(request.substr(0, end));
    co_await asio::async_write(socket, asio::buffer(response), kAsTuple);
  }
  deadline.cancel();
  asio::error_code ignored;
  socket.shutdown(asio::socket_base::shutdown_both, ignored);
  socket.close(ignored);
  --connections_;
}

}  // namespace dst::server
