// OffLoopWork: blocking work that must not stall the event loop (reading or formatting an
// export, planning an assembly) on a thread of its own per job, its continuation posted back to
// the loop. JoinAll() (at stop) waits for the threads still at work and drops their
// continuations; a format in progress is waited for, a connect gives up after its own timeout.
//
// Threading: Run() and JoinAll() on the event loop's thread (JoinAll() also once the loop has
// stopped); `work` on its own thread, touching only what it was given.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <thread>

#include <asio.hpp>

#include "common/lifetime.h"
#include "common/status.h"

namespace dst::aggregator {

class OffLoopWork {
 public:
  explicit OffLoopWork(asio::io_context& io) : io_(io) {}
  ~OffLoopWork() { JoinAll(); }
  OffLoopWork(const OffLoopWork&) = delete;
  OffLoopWork& operator=(const OffLoopWork&) = delete;

  // Runs `work` on a thread of its own, then `then` with its result on the loop (unless
  // JoinAll() came first). One job per `id` at a time.
  void Run(uint64_t id, std::function<Status()> work, std::function<void(Status)> then);
  void JoinAll();

 private:
  asio::io_context& io_;
  std::map<uint64_t, std::thread> threads_;  // by job; joined on the loop
  Lifetime lifetime_;                        // last: expires first
};

}  // namespace dst::aggregator
