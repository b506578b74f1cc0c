#include "common/worker_pool.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

namespace dst {

WorkerPool::WorkerPool(size_t threads) {
  threads = std::max<size_t>(threads, 1);
  threads_.reserve(threads);
  for (size_t w = 0; w < threads; ++w)
    threads_.emplace_back([this, w] { Work(w); });
}

WorkerPool::~WorkerPool() {
  Shutdown();
}

bool WorkerPool::Submit(Task task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return false;
    queue_.push_back(std::move(task));
  }
  ready_.notify_one();
  return true;
}

void WorkerPool::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

// Takes tasks until the pool stops and the queue is empty: what was queued before Shutdown() runs.
void WorkerPool::Work(size_t worker) {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task(worker);
  }
}

size_t DefaultWorkerCount() {
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

// One ForEachIndex call. Owned by whichever chunk finishes last, which hands it to the executor:
// `each` and `done` are destroyed there, never on a worker.
struct IndexRun {
  asio::any_io_executor executor;
  std::function<void(size_t worker, uint64_t index)> each;
  std::function<void()> done;
  std::atomic<size_t> chunks_left{0};
};

void Complete(std::unique_ptr<IndexRun> run) {
  const asio::any_io_executor executor = run->executor;
  asio::post(executor, [run = std::move(run)] { run->done(); });
}

}  // namespace

void ForEachIndex(WorkerPool& pool, const asio::any_io_executor& executor, uint64_t count,
                  std::function<void(size_t worker, uint64_t index)> each,
                  std::function<void()> done) {
  auto run = std::make_unique<IndexRun>();
  run->executor = executor;
  run->each = std::move(each);
  run->done = std::move(done);
  if (count == 0) return Complete(std::move(run));
  const uint64_t chunks = std::min<uint64_t>(count, pool.size());
  run->chunks_left.store(chunks);
  // From here the chunks own the run: the last one to finish passes it on.
  IndexRun* shared = run.release();
  for (uint64_t c = 0; c < chunks; ++c) {
    const uint64_t begin = count * c / chunks;
    const uint64_t end = count * (c + 1) / chunks;
    pool.Submit([shared, begin, end](size_t worker) {
      for (uint64_t i = begin; i < end; ++i)
        shared->each(worker, i);
      // acq_rel: the last chunk sees every other chunk's writes, and so does `done` after it.
      if (shared->chunks_left.fetch_sub(1, std::memory_order_acq_rel) == 1)
        Complete(std::unique_ptr<IndexRun>(shared));
    });
  }
}

}  // namespace dst
