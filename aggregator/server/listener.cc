#include "aggregator/server/listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

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
  asio::co_spawn(io_, AcceptTcp(*tcp_.back(), "clients on " + host_port), asio::detached);
  return Status::Ok();
}

namespace {

bool IsSocket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

void RemoveUnixSocket(const std::string& path) {
  if (IsSocket(path)) ::unlink(path.c_str());
}

Status OpenUnixAcceptor(asio::io_context& io, const std::string& path, unsigned mode,
                        const std::string& context,
                        std::unique_ptr<asio::local::stream_protocol::acceptor>* out) {
  // A socket left by a process that is gone is replaced; anything else at
  // the path is somebody's data (a typo in a unit file must not delete it).
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::Error(EEXIST, context + ": " + path +
                                       " exists and is not a socket; not replacing it (remove "
                                       "it, or choose another path)");
    ::unlink(path.c_str());
  }
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
  asio::co_spawn(io_, AcceptUnix(*unix_.back(), "clients on " + path), asio::detached);
  return Status::Ok();
}

void Listener::Close() {
  asio::error_code ignored;
  for (auto& acceptor : tcp_)
    acceptor->close(ignored);
  for (auto& acceptor : unix_)
    acceptor->close(ignored);
  for (const std::string& path : unix_paths_)
    RemoveUnixSocket(path);  // no stale socket left for the next start to trip over
  unix_paths_.clear();
}

std::chrono::milliseconds AcceptBackoff::Failed(const asio::error_code& ec) {
  if (ec == asio::error::connection_aborted || ec == asio::error::interrupted) {
    LOG_DEBUG("%s: accept: %s", where_.c_str(), ec.message().c_str());
    return std::chrono::milliseconds(0);  // one client's trouble, not the server's
  }
  const auto now = Clock::now();
  ++failures_since_log_;
  if (pause_.count() == 0) {
    trouble_since_ = now;
    last_log_ = now;
    failures_since_log_ = 0;
    pause_ = kFirstPause;
    LOG_WARNING(
        "%s: accept: %s; new clients wait until it works again (retrying every %lld ms "
        "to %lld ms)",
        where_.c_str(), ec.message().c_str(), static_cast<long long>(kFirstPause.count()),
        static_cast<long long>(kMaxPause.count()));
    return pause_;
  }
  pause_ = std::min(pause_ * 2, kMaxPause);
  if (now - last_log_ >= kLogInterval) {
    LOG_WARNING("%s: accept: %s, for %lld s now (%llu failures since the last line)",
                where_.c_str(), ec.message().c_str(),
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::seconds>(now - trouble_since_).count()),
                static_cast<unsigned long long>(failures_since_log_));
    last_log_ = now;
    failures_since_log_ = 0;
  }
  return pause_;
}

void AcceptBackoff::Succeeded() {
  if (pause_.count() == 0) return;
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - trouble_since_);
  LOG_INFO("%s: accepting again after %lld ms", where_.c_str(), static_cast<long long>(ms.count()));
  pause_ = std::chrono::milliseconds(0);
}

asio::awaitable<bool> PauseAccepting(std::chrono::milliseconds pause, const LifetimeWatch& alive) {
  if (pause.count() == 0) co_return !alive.expired();
  asio::steady_timer timer(co_await asio::this_coro::executor, pause);
  auto [ec] = co_await timer.async_wait(kAsTuple);
  co_return !ec && !alive.expired();
}

void Listener::LogRefusal(const std::string& line) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_refusal_log_ < std::chrono::seconds(1)) {
    ++refusals_not_logged_;
    return;
  }
  if (refusals_not_logged_ > 0)
    LOG_WARNING("%s (and %llu more refused since the last such line)", line.c_str(),
                static_cast<unsigned long long>(refusals_not_logged_));
  else
    LOG_WARNING("%s", line.c_str());
  last_refusal_log_ = now;
  refusals_not_logged_ = 0;
}

namespace {

// Holds the connection until its coroutine has started: on another loop, it starts later.
asio::awaitable<void> RunConnection(std::shared_ptr<ClientConnection> connection) {
  co_await connection->Run();
}

}  // namespace

void Listener::Spawn(Socket socket, std::string peer, std::string address, size_t loop) {
  std::unique_lock lock(policy_.open_mutex);
  if (policy_.open_connections >= policy_.max_connections) {
    LogRefusal("client " + peer + ": refused: " + std::to_string(policy_.open_connections) +
               " connections already open (--max-connections)");
    return;  // the socket closes as it goes out of scope
  }
  if (!address.empty()) {
    const auto it = policy_.open_per_address.find(address);
    const size_t open = it == policy_.open_per_address.end() ? 0 : it->second;
    if (open >= policy_.PerAddressLimit()) {
      LogRefusal("client " + peer + ": refused: " + std::to_string(open) +
                 " connections already open from " + address + " (--max-connections-per-address)");
      return;
    }
  }
  lock.unlock();  // the connection counts itself in
  const asio::any_io_executor executor = socket.get_executor();
  auto connection = std::make_shared<ClientConnection>(
      std::move(socket), registry_, limits_, policy_, std::move(peer), std::move(address), loop);
  asio::co_spawn(executor, RunConnection(std::move(connection)), asio::detached);
}

asio::awaitable<void> Listener::AcceptTcp(asio::ip::tcp::acceptor& acceptor, std::string where) {
  const LifetimeWatch alive = lifetime_.Watch();
  AcceptBackoff backoff(std::move(where));
  while (acceptor.is_open()) {
    size_t loop = 0;
    auto [ec, socket] = co_await acceptor.async_accept(NextLoop(&loop), kAsTuple);
    if (ec == asio::error::operation_aborted || alive.expired()) break;
    if (ec) {
      if (!co_await PauseAccepting(backoff.Failed(ec), alive)) break;
      continue;
    }
    backoff.Succeeded();
    asio::error_code ignored;
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);  // replies are small and urgent
    const auto remote = socket.remote_endpoint(ignored);
    std::string peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    Spawn(Socket(std::move(socket)), std::move(peer), AddressKey(remote.address()), loop);
  }
}

// Clients on Unix sockets share one "address" and are authenticated by the
// socket's permissions: they are not counted per address.
asio::awaitable<void> Listener::AcceptUnix(asio::local::stream_protocol::acceptor& acceptor,
                                           std::string where) {
  const LifetimeWatch alive = lifetime_.Watch();
  AcceptBackoff backoff(std::move(where));
  while (acceptor.is_open()) {
    size_t loop = 0;
    auto [ec, socket] = co_await acceptor.async_accept(NextLoop(&loop), kAsTuple);
    if (ec == asio::error::operation_aborted || alive.expired()) break;
    if (ec) {
      if (!co_await PauseAccepting(backoff.Failed(ec), alive)) break;
      continue;
    }
    backoff.Succeeded();
    Spawn(Socket(std::move(socket)), "unix", "", loop);
  }
}

}  // namespace dst::server
