#include "aggregator/off_loop.h"

#include <utility>

namespace dst::aggregator {

void OffLoopWork::Run(uint64_t id, std::function<Status()> work, std::function<void(Status)> then) {
  threads_.emplace(id, std::thread([this, work = std::move(work), then = std::move(then),
                                    alive = lifetime_.Watch(), id] {
                     Status s = work();
                     asio::post(io_, [this, alive, id, then, s = std::move(s)] {
                       if (alive.expired()) return;
                       // The thread has posted this as its last act: the join does not wait.
                       if (auto t = threads_.find(id); t != threads_.end()) {
                         t->second.join();
                         threads_.erase(t);
                       }
                       then(s);
                     });
                   }));
}

void OffLoopWork::JoinAll() {
  // Their results are not looked at: the handlers they post find the lifetime ended.
  for (auto& [id, thread] : threads_)
    thread.join();
  threads_.clear();
  lifetime_.End();
}

}  // namespace dst::aggregator
