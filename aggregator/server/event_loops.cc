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

asio::any_io_executor EventLoops::Next(size_t* index, const std::vector<size_t>& open) {
  auto open_on = [&open](size_t loop) { return loop < open.size() ? open[loop] : 0; };
  size_t i = next_ % size();
  for (size_t k = 1; k < size(); ++k) {
    const size_t candidate = (next_ + k) % size();
    if (open_on(candidate) < open_on(i)) i = candidate;
  }
  next_ = i + 1;
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

namespace event_loops_detail {

// RunOn's initiation: a named type, since the coroutine frame holds it (in a unity batch a lambda
// there trips -Wsubobject-linkage).
struct PostAndResume {
  asio::any_io_executor loop;
  asio::any_io_executor here;

  template <typename Resume>
  void operator()(Resume resume, std::function<void()> work) const {
    asio::post(loop, [work = std::move(work), resume = std::move(resume), here = here]() mutable {
      work();
      asio::post(here, std::move(resume));
    });
  }
};

}  // namespace event_loops_detail

asio::awaitable<void> RunOn(asio::any_io_executor loop, std::function<void()> work) {
  const asio::any_io_executor here = co_await asio::this_coro::executor;
  if (!loop || loop == here) {
    work();
    co_return;
  }
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      event_loops_detail::PostAndResume{loop, here}, asio::use_awaitable, std::move(work));
}

}  // namespace dst::server
