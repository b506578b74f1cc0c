#include "aggregator/server/listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <charconv>

#include "common/log.h"

namespace dst::server {

bool UnixSocketInUse(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return live;
}

Status ParseHostPort(const std::string& text, asio::ip::tcp::endpoint* out) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return Status::Invalid("--listen " + text + ": expected HOST:PORT");
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535)
    return Status::Invalid("--listen " + text + ": bad port '" + port_text + "'");
  asio::error_code aec;
  const auto address = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, aec);
  if (aec) return Status::Invalid("--listen " + text + ": bad address '" + host + "'");
  *out = asio::ip::tcp::endpoint(address, static_cast<uint16_t>(port));
  return Status::Ok();
}

Status OpenTcpAcceptor(asio::io_context& io, const std::string& host_port,
                       std::unique_ptr<asio::ip::tcp::acceptor>* out) {
  asio::ip::tcp::endpoint endpoint;
  DST_RETURN_IF_ERROR(ParseHostPort(host_port, &endpoint));
  auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(io);
  asio::error_code ec;
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::Error(ec.value(), "listen on " + host_port + ": " + ec.message());
  *out = std::move(acceptor);
  return Status::Ok();
}

Status Listener::ListenTcp(const std::string& host_port) {
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  DST_RETURN_IF_ERROR(OpenTcpAcceptor(io_, host_port, &acceptor));
  tcp_.push_back(std::move(acceptor));
  asio::co_spawn(io_, AcceptTcp(*tcp_.back()), asio::detached);
  return Status::Ok();
}

Status OpenUnixAcceptor(asio::io_context& io, const std::string& path, unsigned mode,
                        const std::string& context,
                        std::unique_ptr<asio::local::stream_protocol::acceptor>* out) {
  ::unlink(path.c_str());  // stale, from a process that is gone
  auto acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(io);
  asio::error_code ec;
  const asio::local::stream_protocol::endpoint endpoint(path);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  // Before listen(): no client can connect while the mode is still wider.
  if (!ec && mode != 0 && ::chmod(path.c_str(), mode) != 0)
    ec.assign(errno, asio::system_category());
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::Error(ec.value(), context + ": " + ec.message());
  *out = std::move(acceptor);
  return Status::Ok();
}

Status Listener::ListenUnix(const std::string& path) {
  // Another server's live socket is never taken over: that would cut its
  // clients off while it still looks healthy.
  if (UnixSocketInUse(path))
    return Status::Error(EADDRINUSE, "listen on " + path + ": in use by another process");
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor;
  DST_RETURN_IF_ERROR(OpenUnixAcceptor(io_, path, 0, "listen on " + path, &acceptor));
  unix_.push_back(std::move(acceptor));
  unix_paths_.push_back(path);
  asio::co_spawn(io_, AcceptUnix(*unix_.back()), asio::detached);
  return Status::Ok();
}

void Listener::Close() {
  asio::error_code ignored;
  for (auto& acceptor : tcp_)
    acceptor->close(ignored);
  for (auto& acceptor : unix_)
    acceptor->close(ignored);
  for (const std::string& path : unix_paths_)
    ::unlink(path.c_str());  // no stale socket left for the next start to trip over
  unix_paths_.clear();
}

void Listener::Spawn(Socket socket, std::string peer) {
  if (policy_.open_connections >= policy_.max_connections) {
    LOG_WARNING("client %s: refused: %zu connections already open (--max-connections)",
                peer.c_str(), policy_.open_connections);
    return;  // the socket closes as it goes out of scope
  }
  auto connection = std::make_shared<ClientConnection>(std::move(socket), registry_, limits_,
                                                       policy_, std::move(peer));
  asio::co_spawn(io_, connection->Run(), asio::detached);
}

asio::awaitable<void> Listener::AcceptTcp(asio::ip::tcp::acceptor& acceptor) {
  while (acceptor.is_open()) {
    asio::ip::tcp::socket socket(io_);
    auto [ec] = co_await acceptor.async_accept(socket, kAsTuple);
    if (ec == asio::error::operation_aborted) break;
    if (ec) {
      LOG_WARNING("accept: %s", ec.message().c_str());  // e.g. EMFILE: keep serving others
      continue;
    }
    asio::error_code ignored;
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);  // replies are small and urgent
    const auto remote = socket.remote_endpoint(ignored);
    std::string peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    Spawn(Socket(std::move(socket)), std::move(peer));
  }
}

asio::awaitable<void> Listener::AcceptUnix(asio::local::stream_protocol::acceptor& acceptor) {
  while (acceptor.is_open()) {
    asio::local::stream_protocol::socket socket(io_);
    auto [ec] = co_await acceptor.async_accept(socket, kAsTuple);
    if (ec == asio::error::operation_aborted) break;
    if (ec) {
      LOG_WARNING("accept: %s", ec.message().c_str());
      continue;
    }
    Spawn(Socket(std::move(socket)), "unix");
  }
}

}  // namespace dst::server
