// EventLoops: the event loops a server runs its client connections on (serve --threads N).
//
// Loop 0 is the home loop: the server's own io_context, run by the thread that calls serve. The
// volumes, their members, the control and metrics servers, the listeners and every management
// command live there. Loops 1..N-1 each have an io_context and a thread of their own, and run
// client connections only: a connection is placed on one loop when it is accepted and stays
// there, from handshake to close (on the loop with the fewest open, in turn among equals, so the
// kernel client's `-C N` connections and fio's jobs spread over every loop). A connection on
// another loop than home reaches its volume through a HomeLoopDevice (home_loop_device.h): each
// request is posted to the home loop and its completion posted back; or, for a raw volume, through
// the loop's own copy of it, over its own member connections (aggregator/loop_volumes.h), with no
// hand-over at all.
//
// Threading contract:
//   - Construction, Next() and Stop() on the home loop's thread.
//   - Stop() stops the other loops and joins their threads; what is still queued there stays
//     queued, unrun, until the EventLoops is destroyed, which destroys it. A server destroys its
//     home io_context first (whose queue may hold coroutines of connections placed elsewhere)
//     and its EventLoops after it; both after Stop().
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <asio.hpp>

namespace dst::server {

class EventLoops {
 public:
  // `home` plus `extra` loops with a thread each.
  EventLoops(asio::io_context& home, size_t extra);
  ~EventLoops();
  EventLoops(const EventLoops&) = delete;
  EventLoops& operator=(const EventLoops&) = delete;

  // Loops in all, home included.
  size_t size() const { return 1 + loops_.size(); }
  // The loop for the next connection; its number (0: home) in *index. Of the loops with the
  // fewest connections open (`open`, by loop; a loop past its end has none), the first in turn
  // from the one after the last chosen; so with none open, loop 1 first and home last. Counting
  // what is open, not only taking turns, keeps the work spread when clients come and go: fio's
  // nbd engine opens a connection per job to size the export and closes it before it opens the
  // one it works on, and in turn alone those could all land on one loop.
  asio::any_io_executor Next(size_t* index, const std::vector<size_t>& open = {});
  // Loop `index` (0: home), for what lives on one loop (aggregator/loop_volumes.h).
  asio::io_context& Context(size_t index) { return index == 0 ? home_ : loops_.at(index - 1)->io; }
  // Stops the loops other than home and joins their threads. Idempotent.
  void Stop();

 private:
  struct Loop {
    asio::io_context io{1};
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    std::thread thread;
  };

  asio::io_context& home_;
  std::vector<std::unique_ptr<Loop>> loops_;
  size_t next_ = 1;  // home last: it carries the volumes and members too
};

// Runs `work` on `loop` and resumes the awaiting coroutine on its own executor afterwards: how a
// connection on another loop reads and changes what lives on the home loop (the export registry,
// a volume's clients). With an empty `loop`, or the awaiting coroutine's own, `work` runs at once.
// A std::function, not a template: rare calls (handshakes, arrivals), and a coroutine template
// instantiated with a lambda of a file's anonymous namespace trips -Wsubobject-linkage.
asio::awaitable<void> RunOn(asio::any_io_executor loop, std::function<void()> work);

}  // namespace dst::server
