// EventLoops, RunOn and HomeLoopDevice: connections go to the loops in turn, home last; work
// handed to the home loop runs on its thread and the caller resumes on its own; a device call made
// from another loop runs on the home loop, and its completion, with what the device answered,
// comes back on the caller's loop. Assertions are made on the test's thread (doctest's are not
// thread-safe): the other loop only records.
#include "aggregator/server/event_loops.h"

#include <doctest/doctest.h>

#include <future>
#include <thread>

#include "aggregator/server/home_loop_device.h"

namespace dst::server::event_loops_test {
namespace {

// Records the thread of every call and answers a read with one hole.
class ThreadRecordingDevice : public volume::BlockDevice {
 public:
  const std::string& name() const override { return name_; }
  const std::string& description() const override { return name_; }
  uint64_t size() const override { return 1 << 20; }
  const volume::VolumeCapabilities& capabilities() const override { return caps_; }
  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override {
    called_on = std::this_thread::get_id();
    buf[0] = 42;
    done(0, {{offset, length}});
  }
  void Write(uint64_t, uint64_t, const uint8_t*, bool, Done done) override {
    called_on = std::this_thread::get_id();
    done(EIO);
  }
  void Flush(Done done) override { done(0); }
  void Trim(uint64_t, uint64_t, bool, Done done) override { done(0); }
  void Zero(uint64_t, uint64_t, bool, bool, bool, Done done) override { done(0); }
  void Cache(uint64_t, uint64_t, Done done) override { done(0); }
  void BlockStatus(uint64_t, uint64_t, ExtentsDone done) override { done(0, {}); }

  std::thread::id called_on;

 private:
  std::string name_ = "dev";
  volume::VolumeCapabilities caps_;
};

// The home loop is the test's thread: runs it until `finished` is ready (5 s at most); whether it
// was.
bool RunHomeUntil(asio::io_context& home, std::future<void> finished) {
  const auto ready = [&] {
    return finished.wait_for(std::chrono::milliseconds(0)) == std::future_status::ready;
  };
  for (int i = 0; i < 500 && !ready(); ++i)
    home.run_for(std::chrono::milliseconds(10));
  return ready();
}

TEST_SUITE_BEGIN("event_loops");

TEST_CASE("connections go to the loops in turn from loop 1, the home loop last") {
  asio::io_context home;
  EventLoops loops(home, 2);
  CHECK(loops.size() == 3);
  size_t index = 99;
  std::vector<size_t> order;
  for (int i = 0; i < 6; ++i) {
    const asio::any_io_executor executor = loops.Next(&index);
    order.push_back(index);
    CHECK((executor == home.get_executor()) == (index == 0));
  }
  CHECK(order == std::vector<size_t>{1, 2, 0, 1, 2, 0});
  loops.Stop();
  loops.Stop();  // idempotent
}

TEST_CASE("a connection goes to the loop with the fewest open, in turn among equals") {
  asio::io_context home;
  EventLoops loops(home, 2);
  size_t index = 99;
  // Loop 1 holds one: loop 2, the next in turn with none.
  CHECK(loops.Next(&index, {0, 1, 0}) != home.get_executor());
  CHECK(index == 2);
  // Then home, next in turn after loop 2, with none open too.
  CHECK(loops.Next(&index, {0, 1, 1}) == home.get_executor());
  CHECK(index == 0);
  // Every loop holds some: the one with the fewest, wherever the turn is.
  loops.Next(&index, {3, 1, 2});
  CHECK(index == 1);
  // Counts for fewer loops than there are: the rest have none.
  loops.Next(&index, {1});
  CHECK(index == 2);
  loops.Stop();
}

TEST_CASE("RunOn runs the work on the home loop and resumes on the caller's loop") {
  asio::io_context home;
  const auto busy = asio::make_work_guard(home);  // run_for waits for the other loop's posts
  EventLoops loops(home, 1);
  size_t index = 0;
  const asio::any_io_executor other = loops.Next(&index);
  REQUIRE(index == 1);
  std::thread::id work_on, resumed_on, other_thread;
  std::promise<void> finished;
  asio::co_spawn(
      other,
      [&]() -> asio::awaitable<void> {
        other_thread = std::this_thread::get_id();
        co_await RunOn(home.get_executor(), [&] { work_on = std::this_thread::get_id(); });
        resumed_on = std::this_thread::get_id();
        finished.set_value();
      },
      asio::detached);
  REQUIRE(RunHomeUntil(home, finished.get_future()));
  loops.Stop();
  CHECK(work_on == std::this_thread::get_id());
  CHECK(resumed_on == other_thread);
  CHECK(other_thread != std::this_thread::get_id());
}

TEST_CASE("HomeLoopDevice calls the device on the home loop and completes on the caller's") {
  asio::io_context home;
  const auto busy = asio::make_work_guard(home);  // run_for waits for the other loop's posts
  EventLoops loops(home, 1);
  size_t index = 0;
  const asio::any_io_executor other = loops.Next(&index);
  ThreadRecordingDevice device;
  std::thread::id read_done_on, write_done_on, other_thread;
  std::vector<volume::ByteRange> holes;
  int read_err = -1, write_err = 0;
  bool copied = false;  // what the bridge reports is the copy, not the device
  uint8_t buf[8] = {};
  std::promise<void> finished;
  std::unique_ptr<HomeLoopDevice> bridge;
  ExportView view;  // as the handshake copies it, here unlike the device's own
  view.volume = &device;
  view.name = "copy";
  view.size = 4096;
  asio::post(other, [&] {
    other_thread = std::this_thread::get_id();
    bridge = std::make_unique<HomeLoopDevice>(view, home.get_executor(), other);
    copied = bridge->name() == "copy" && bridge->size() == 4096;
    bridge->Read(4096, 8, buf, [&](int err, std::vector<volume::ByteRange> h) {
      read_err = err;
      read_done_on = std::this_thread::get_id();
      holes = std::move(h);
      bridge->Write(0, 8, buf, false, [&](int err2) {
        write_err = err2;
        write_done_on = std::this_thread::get_id();
        bridge.reset();
        finished.set_value();
      });
    });
  });
  REQUIRE(RunHomeUntil(home, finished.get_future()));
  loops.Stop();
  CHECK(device.called_on == std::this_thread::get_id());  // the home loop's thread
  CHECK(read_done_on == other_thread);
  CHECK(write_done_on == other_thread);
  CHECK(holes == std::vector<volume::ByteRange>{{4096, 8}});
  CHECK(buf[0] == 42);
  CHECK(copied);
  CHECK(read_err == 0);
  CHECK(write_err == EIO);
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::server::event_loops_test
