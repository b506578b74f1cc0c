#include "aggregator/server/one_shot_server.h"

#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

#include "aggregator/server/listener.h"
#include "common/log.h"

namespace dst::server {

// One client. Shared by its coroutine and its deadline's handler, which may
// run after the coroutine has ended (an expiry in the same pass of the event
// loop as the client's last event): the socket it closes is still there.
struct OneShotServer::Session {
  explicit Session(Socket s) : socket(std::move(s)) {}
  void Close() {
    asio::error_code ignored;
    socket.close(ignored);
  }

  Socket socket;
  bool answering = false;  // the request is complete: not to be evicted
  // The handler's answer, and what the coroutine waits on until it comes.
  std::optional<std::string> response;
  std::unique_ptr<asio::steady_timer> answered;
  bool listed = true;  // in sessions_ at `position`
  Sessions::iterator position;
};

OneShotServer::OneShotServer(asio::io_context& io, std::string terminator, size_t max_request,
                             std::chrono::milliseconds timeout, Handler handler)
    : io_(io),
      terminator_(std::move(terminator)),
      max_request_(max_request),
      timeout_(timeout),
      handler_([handler = std::move(handler)](const std::string& request, Answer answer) {
        answer(handler(request));
      }) {}

OneShotServer::OneShotServer(asio::io_context& io, std::string terminator, size_t max_request,
                             std::chrono::milliseconds timeout, AsyncHandler handler)
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
  asio::co_spawn(io_, Accept(*unix_, "control socket " + path), asio::detached);
  return Status::Ok();
}

Status OneShotServer::ListenTcp(const std::string& host_port) {
  DST_RETURN_IF_ERROR(OpenTcpAcceptor(io_, host_port, &tcp_));
  asio::co_spawn(io_, Accept(*tcp_, "metrics on " + host_port), asio::detached);
  return Status::Ok();
}

void OneShotServer::Close() {
  asio::error_code ignored;
  if (tcp_) tcp_->close(ignored);
  if (unix_ && unix_->is_open()) {
    unix_->close(ignored);
    RemoveUnixSocket(unix_path_);
  }
}

template <typename Acceptor>
asio::awaitable<void> OneShotServer::Accept(Acceptor& acceptor, std::string where) {
  const LifetimeWatch alive = lifetime_.Watch();
  AcceptBackoff backoff(std::move(where));
  while (acceptor.is_open()) {
    typename Acceptor::protocol_type::socket socket(io_);
    auto [ec] = co_await acceptor.async_accept(socket, kAsTuple);
    if (ec == asio::error::operation_aborted || alive.expired()) break;
    if (ec) {
      if (!co_await PauseAccepting(backoff.Failed(ec), alive)) break;
      continue;
    }
    backoff.Succeeded();
    Admit(Socket(std::move(socket)));
  }
}

void OneShotServer::Admit(Socket socket) {
  if (sessions_.size() >= kMaxConnections) {
    const auto oldest_waiting = std::find_if(sessions_.begin(), sessions_.end(),
                                             [](const auto& s) { return !s->answering; });
    if (oldest_waiting == sessions_.end()) return;  // all answering: closed as it goes
    LOG_DEBUG("%zu connections at once: closing the oldest, which has not sent its request",
              sessions_.size());
    (*oldest_waiting)->listed = false;
    (*oldest_waiting)->Close();  // its coroutine ends in the next pass
    sessions_.erase(oldest_waiting);
  }
  auto session = std::make_shared<Session>(std::move(socket));
  session->position = sessions_.insert(sessions_.end(), session);
  asio::co_spawn(io_, Serve(std::move(session)), asio::detached);
}

asio::awaitable<void> OneShotServer::Serve(std::shared_ptr<Session> session) {
  const LifetimeWatch alive = lifetime_.Watch();
  // The deadline closes the socket, which ends any read or write pending.
  asio::steady_timer deadline(io_, timeout_);
  deadline.async_wait([session](const asio::error_code& ec) {
    if (!ec) session->Close();
  });
  std::string request;
  char chunk[1024];
  size_t end = std::string::npos;
  while (end == std::string::npos && request.size() <= max_request_) {
    auto [ec, n] = co_await session->socket.async_read_some(asio::buffer(chunk), kAsTuple);
    if (alive.expired()) co_return;  // the server is gone; the session closes with us
    if (ec) break;
    request.append(chunk, n);
    end = request.find(terminator_);
  }
  if (end != std::string::npos) {
    session->answering = true;
    session->answered = std::make_unique<asio::steady_timer>(io_);
    session->answered->expires_at(asio::steady_timer::time_point::max());
    handler_(request.substr(0, end), [weak = std::weak_ptr<Session>(session)](std::string r) {
      const std::shared_ptr<Session> s = weak.lock();
      if (!s || s->response) return;
      s->response = std::move(r);
      s->answered->cancel();
    });
    if (!session->response) {
      deadline.cancel();  // the handler takes its time; the deadline counts again for the answer
      co_await session->answered->async_wait(kAsTuple);
      if (alive.expired()) co_return;
      deadline.expires_after(timeout_);
      deadline.async_wait([session](const asio::error_code& ec) {
        if (!ec) session->Close();
      });
    }
    co_await asio::async_write(session->socket, asio::buffer(*session->response), kAsTuple);
    if (alive.expired()) co_return;
  }
  deadline.cancel();
  asio::error_code ignored;
  session->socket.shutdown(asio::socket_base::shutdown_both, ignored);
  session->Close();
  if (session->listed) sessions_.erase(session->position);
}

}  // namespace dst::server
