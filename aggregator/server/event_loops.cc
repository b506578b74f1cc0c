#include "aggregator/server/event_loops.h"

namespace dst::server {

EventLoops::EventLoops(asio::io_context& home, size_t extra) : home_(home) {
  for (size_t i = 0; i < extra; ++i) {
    loops_.push_back(std::make_unique<Loop>());
    Loop& loop = *loops_.back();
    loop.thread = std::thread([&loop] { loop.io.run(); });
  }
}

EventLoops::~EventLoops() {
  Stop();
}

asio::any_io_executor EventLoops::Next(size_t* index) {
  const size_t i = next_++ % size();
  *index = i;
  return i == 0 ? home_.get_executor() : loops_[i - 1]->io.get_executor();
}

void EventLoops::Stop() {
  for (auto& loop : loops_) {
    loop->work.reset();
    loop->io.stop();
  }
  for (auto& loop : loops_)
    if (loop->thread.joinable()) loop->thread.join();
}

}  // namespace dst::server
