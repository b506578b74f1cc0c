// WorkerPool: a fixed set of threads for CPU-bound work that would otherwise stall the event loop
// (the checksums and ciphers of large requests, docs/integrity.md). ForEachIndex() spreads a
// per-index function over the workers in chunks and posts its completion back to the caller's
// executor.
//
// Threading contract:
//   - Submit() and ForEachIndex() may be called from any thread (the event loop in practice), but
//     not after Shutdown() began and not from inside a task.
//   - A task runs on one worker thread and is told that worker's index, 0..size()-1. A worker runs
//     one task at a time, so state kept per worker index (a Checksummer, a BlockCipher, neither of
//     which is thread-safe) is only ever used by one thread at a time, without a lock.
//   - ForEachIndex's `done` runs on the executor given, posted: never on a worker thread and never
//     inside ForEachIndex. `each` and `done` are also destroyed there, so that what they capture
//     (a request and its callbacks) is released on the caller's thread.
//   - Shutdown() (and the destructor, which calls it) stops taking tasks, lets the workers run
//     every task already queued to its end, then joins them. Completions those tasks post reach
//     their executors as usual; an io_context that is never run again destroys them unrun. A task
//     submitted after Shutdown() began is dropped: Submit() returns false and it never runs.
//   - A task must not call Shutdown() or destroy the pool.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <asio.hpp>

namespace dst {

class WorkerPool {
 public:
  using Task = std::function<void(size_t worker)>;

  // `threads` workers, at least 1.
  explicit WorkerPool(size_t threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  size_t size() const { return threads_.size(); }

  // Queues `task` for the first worker free; false (and `task` dropped) once Shutdown() began.
  bool Submit(Task task);
  // Runs what is queued, then joins the workers. Idempotent; on the thread that owns the pool.
  void Shutdown();

 private:
  void Work(size_t worker);

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Task> queue_;  // guarded by mutex_
  bool stopping_ = false;   // guarded by mutex_
  std::vector<std::thread> threads_;
};

// The number of workers `serve` starts by default: the online cores, at least 1.
size_t DefaultWorkerCount();

// Runs `each(worker, index)` for every index of [0, count) exactly once, in at most pool.size()
// chunks of consecutive indexes, one task each; then posts `done` to `executor` once every chunk
// has returned (at once, posted, when count is 0). Indexes of one chunk run in order on one
// worker; chunks run in any order and at once.
void ForEachIndex(WorkerPool& pool, const asio::any_io_executor& executor, uint64_t count,
                  std::function<void(size_t worker, uint64_t index)> each,
                  std::function<void()> done);

}  // namespace dst
