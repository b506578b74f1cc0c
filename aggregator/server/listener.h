// Listeners: accept clients on TCP and Unix sockets and run a
// ClientConnection for each, up to ConnectionPolicy::max_connections at once
// and ConnectionPolicy::PerAddressLimit() from one address (a client over a
// bound is accepted and closed at once, so it sees a disconnect rather than
// waiting in the backlog; refusals are logged at most once a second).
// Binding happens in Listen*(), synchronously at start-up, so that a busy
// port is reported before serving begins.
//
// When accept fails for want of descriptors or memory (EMFILE, ENFILE,
// ENOBUFS, ENOMEM), the loop pauses instead of retrying at once, which would
// spin: AcceptBackoff.
//
// Threading: the accept loops run on the home event loop; each client is
// accepted onto the loop EventLoops::Next() names, and its connection runs
// there.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aggregator/server/connection.h"
#include "aggregator/server/event_loops.h"
#include "common/lifetime.h"

namespace dst::server {

// A TCP acceptor listening on HOST:PORT (address reuse on, so a restart does
// not wait for TIME_WAIT); errors name the address.
Status OpenTcpAcceptor(asio::io_context& io, const std::string& host_port,
                       std::unique_ptr<asio::ip::tcp::acceptor>* out);

// A Unix socket acceptor listening on `path`, chmodded to `mode` unless 0.
// A socket already at `path` is replaced (the caller has checked that nobody
// listens there: UnixSocketInUse); anything else there (a regular file, a
// directory) is left alone and EEXIST returned. Errors read "CONTEXT: reason".
Status OpenUnixAcceptor(asio::io_context& io, const std::string& path, unsigned mode,
                        const std::string& context,
                        std::unique_ptr<asio::local::stream_protocol::acceptor>* out);

// True when a process accepts connections on the Unix socket `path` now.
bool UnixSocketInUse(const std::string& path);

// Removes the Unix socket at `path`, and nothing else: a file that has taken
// its place is left alone.
void RemoveUnixSocket(const std::string& path);

// "HOST:PORT" or "[V6]:PORT" (an empty HOST is every address); EINVAL naming
// --listen otherwise.
Status ParseHostPort(const std::string& text, asio::ip::tcp::endpoint* out);

// The pacing of an accept loop after failures. A failure of the server's
// (EMFILE, ENFILE: no descriptor left; ENOBUFS, ENOMEM; anything unexpected)
// pauses the loop, 100 ms at first and twice as long after each further one,
// up to 1 s: the pending clients wait in the backlog until descriptors are
// free again, and the loop neither spins nor starves the rest of the event
// loop (member reconnects need descriptors too). A client that gave up while
// in the backlog (ECONNABORTED) costs no pause. One warning line when the trouble
// starts, at most one every 10 s while it lasts, one when accepts work again.
class AcceptBackoff {
 public:
  static constexpr std::chrono::milliseconds kFirstPause{100};
  static constexpr std::chrono::milliseconds kMaxPause{1000};
  static constexpr std::chrono::seconds kLogInterval{10};

  // `where`: what accepts, for the log ("clients on 127.0.0.1:10809").
  explicit AcceptBackoff(std::string where) : where_(std::move(where)) {}

  // After a failed accept: how long to pause before the next one.
  std::chrono::milliseconds Failed(const asio::error_code& ec);
  // After a successful accept.
  void Succeeded();

 private:
  using Clock = std::chrono::steady_clock;

  std::string where_;
  std::chrono::milliseconds pause_{0};  // 0: not paused
  Clock::time_point trouble_since_;
  Clock::time_point last_log_;
  uint64_t failures_since_log_ = 0;
};

// Runs an accept loop's pause; false when the loop should end instead (the
// owner of `alive` is gone, or the pause was cancelled).
asio::awaitable<bool> PauseAccepting(std::chrono::milliseconds pause, const LifetimeWatch& alive);

class Listener {
 public:
  // `loops`: where connections run; nullptr: on `io`.
  Listener(asio::io_context& io, const ExportRegistry& registry, InFlightLimits& limits,
           ConnectionPolicy& policy, EventLoops* loops = nullptr)
      : io_(io), registry_(registry), limits_(limits), policy_(policy), loops_(loops) {}
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
  asio::awaitable<void> AcceptTcp(asio::ip::tcp::acceptor& acceptor, std::string where);
  asio::awaitable<void> AcceptUnix(asio::local::stream_protocol::acceptor& acceptor,
                                   std::string where);
  // Runs a connection for the client, unless a connection limit is reached;
  // `address` is its key in ConnectionPolicy::open_per_address, "" for none.
  // `loop`: the number of the loop the socket was accepted onto.
  void Spawn(Socket socket, std::string peer, std::string address, size_t loop);
  // The loop the next client is accepted onto.
  asio::any_io_executor NextLoop(size_t* index) {
    *index = 0;
    if (!loops_) return io_.get_executor();
    std::vector<size_t> open;
    {
      const std::lock_guard lock(policy_.open_mutex);
      open = policy_.open_per_loop;
    }
    return loops_->Next(index, open);
  }
  // Logs a refused client, at most once a second.
  void LogRefusal(const std::string& line);

  asio::io_context& io_;
  const ExportRegistry& registry_;
  InFlightLimits& limits_;
  ConnectionPolicy& policy_;
  EventLoops* loops_;
  // One acceptor per --listen / --unix address; never moved once accepting.
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> tcp_;
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> unix_;
  std::vector<std::string> unix_paths_;
  std::chrono::steady_clock::time_point last_refusal_log_{};
  uint64_t refusals_not_logged_ = 0;
  Lifetime lifetime_;  // the accept loops' check that the listener is still there
};

}  // namespace dst::server
