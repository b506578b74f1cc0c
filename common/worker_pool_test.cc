#include "common/worker_pool.h"

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "common/run_until.h"

namespace dst::worker_pool_test {
namespace {

using std::chrono::seconds;

TEST_CASE("ForEachIndex runs every index once, on the workers, then done on the loop") {
  WorkerPool pool(2);
  asio::io_context io;
  const std::thread::id loop = std::this_thread::get_id();
  for (uint64_t count : {1u, 2u, 3u, 7u, 256u, 1001u}) {
    INFO("count " << count);
    std::vector<std::atomic<int>> seen(count);
    std::atomic<bool> on_loop{false};
    std::vector<std::atomic<size_t>> by_worker(pool.size());
    bool done = false;
    ForEachIndex(
        pool, io.get_executor(), count,
        [&](size_t worker, uint64_t i) {
          ++seen[i];
          if (std::this_thread::get_id() == loop) on_loop = true;
          ++by_worker.at(worker);
        },
        [&] {
          CHECK(std::this_thread::get_id() == loop);
          done = true;
        });
    REQUIRE(RunUntil(
                io, [&] { return done; }, seconds(10)) == RunResult::kDone);
    for (uint64_t i = 0; i < count; ++i)
      CHECK(seen[i] == 1);
    CHECK_FALSE(on_loop);
    size_t total = 0;
    for (auto& n : by_worker)
      total += n;
    CHECK(total == count);
  }
}

TEST_CASE("ForEachIndex's done is posted: never inside the call, also for no index") {
  WorkerPool pool(2);
  asio::io_context io;
  int done = 0;
  ForEachIndex(
      pool, io.get_executor(), 0, [](size_t, uint64_t) { FAIL("no index"); }, [&] { ++done; });
  ForEachIndex(
      pool, io.get_executor(), 4, [](size_t, uint64_t) {}, [&] { ++done; });
  CHECK(done == 0);
  REQUIRE(RunUntil(
              io, [&] { return done == 2; }, seconds(10)) == RunResult::kDone);
}

TEST_CASE("completions reach the loop once their work is complete, in the order it completed") {
  WorkerPool pool(2);
  asio::io_context io;
  // The first run waits for the second to finish: its completion must come second.
  std::atomic<bool> second_finished{false};
  std::vector<int> order;
  ForEachIndex(
      pool, io.get_executor(), 1,
      [&](size_t, uint64_t) {
        const auto deadline = std::chrono::steady_clock::now() + seconds(10);
        while (!second_finished && std::chrono::steady_clock::now() < deadline)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      },
      [&] { order.push_back(1); });
  ForEachIndex(
      pool, io.get_executor(), 1, [&](size_t, uint64_t) {},
      [&] {
        order.push_back(2);
        second_finished = true;
      });
  REQUIRE(RunUntil(
              io, [&] { return order.size() == 2; }, seconds(20)) == RunResult::kDone);
  CHECK(order == std::vector<int>{2, 1});
}

TEST_CASE("each index of a chunk sees its worker's state alone") {
  // Per-worker state without a lock: a worker runs one task at a time.
  WorkerPool pool(3);
  asio::io_context io;
  std::vector<uint64_t> per_worker(pool.size(), 0);  // unsynchronised on purpose
  int finished = 0;
  for (int run = 0; run < 20; ++run)
    ForEachIndex(
        pool, io.get_executor(), 500, [&](size_t worker, uint64_t) { ++per_worker[worker]; },
        [&] { ++finished; });
  REQUIRE(RunUntil(
              io, [&] { return finished == 20; }, seconds(20)) == RunResult::kDone);
  uint64_t total = 0;
  for (uint64_t n : per_worker)
    total += n;
  CHECK(total == 20 * 500);
}

TEST_CASE("Shutdown runs the tasks already queued, joins, and refuses new ones") {
  auto pool = std::make_unique<WorkerPool>(2);
  std::atomic<int> ran{0};
  for (int i = 0; i < 50; ++i)
    CHECK(pool->Submit([&ran](size_t) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      ++ran;
    }));
  pool->Shutdown();
  CHECK(ran == 50);
  CHECK_FALSE(pool->Submit([&ran](size_t) { ++ran; }));
  pool->Shutdown();  // idempotent
  pool.reset();
  CHECK(ran == 50);
}

TEST_CASE("completions posted to a loop that no longer runs are destroyed with it, unrun") {
  auto io = std::make_unique<asio::io_context>();
  auto held = std::make_shared<int>(0);
  bool done = false;
  {
    WorkerPool pool(2);
    ForEachIndex(
        pool, io->get_executor(), 10, [](size_t, uint64_t) {}, [held, &done] { done = true; });
  }  // joined: the completion is queued in io
  CHECK(held.use_count() == 2);
  io.reset();
  CHECK_FALSE(done);
  CHECK(held.use_count() == 1);
}

TEST_CASE("DefaultWorkerCount is the online cores, at least 1") {
  CHECK(DefaultWorkerCount() >= 1);
  if (std::thread::hardware_concurrency() > 0)
    CHECK(DefaultWorkerCount() == std::thread::hardware_concurrency());
}

}  // namespace
}  // namespace dst::worker_pool_test
