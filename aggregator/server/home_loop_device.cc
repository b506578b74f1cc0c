#include "aggregator/server/home_loop_device.h"

#include <utility>

#include "common/object_pool.h"

namespace dst::server {

namespace {

asio::io_context::executor_type LoopOf(const asio::any_io_executor& executor) {
  // Every event loop is an io_context (event_loops.h).
  return static_cast<asio::io_context&>(asio::query(executor, asio::execution::context))
      .get_executor();
}

template <typename Handler>
void PostPooled(const asio::io_context::executor_type& loop, Handler handler) {
  asio::post(loop, asio::bind_allocator(PoolAllocator<void>(), std::move(handler)));
}

}  // namespace

HomeLoopDevice::HomeLoopDevice(const ExportView& view, const asio::any_io_executor& home,
                               const asio::any_io_executor& loop)
    : view_(view), home_(LoopOf(home)), loop_(LoopOf(loop)) {}

template <typename DoneType, typename Call>
void HomeLoopDevice::OnHome(DoneType done, Call call) {
  // The completion goes back to the connection's loop, with what it captured: the request, the
  // connection, and whatever the device handed it (holes, extents).
  DoneType back = [loop = loop_, done = std::move(done)](auto... results) mutable {
    PostPooled(loop, [done = std::move(done), ... results = std::move(results)]() mutable {
      done(std::move(results)...);
    });
  };
  PostPooled(home_, [&device = view_.device(), call = std::move(call),
                     back = std::move(back)]() mutable { call(device, std::move(back)); });
}

void HomeLoopDevice::Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) {
  OnHome(std::move(done), [=](volume::BlockDevice& d, ReadDone back) {
    d.Read(offset, length, buf, std::move(back));
  });
}

void HomeLoopDevice::Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua,
                           Done done) {
  OnHome(std::move(done), [=](volume::BlockDevice& d, Done back) {
    d.Write(offset, length, buf, fua, std::move(back));
  });
}

void HomeLoopDevice::Flush(Done done) {
  OnHome(std::move(done), [](volume::BlockDevice& d, Done back) { d.Flush(std::move(back)); });
}

void HomeLoopDevice::Trim(uint64_t offset, uint64_t length, bool fua, Done done) {
  OnHome(std::move(done),
         [=](volume::BlockDevice& d, Done back) { d.Trim(offset, length, fua, std::move(back)); });
}

void HomeLoopDevice::Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
                          Done done) {
  OnHome(std::move(done), [=](volume::BlockDevice& d, Done back) {
    d.Zero(offset, length, may_trim, fast_only, fua, std::move(back));
  });
}

void HomeLoopDevice::Cache(uint64_t offset, uint64_t length, Done done) {
  OnHome(std::move(done),
         [=](volume::BlockDevice& d, Done back) { d.Cache(offset, length, std::move(back)); });
}

void HomeLoopDevice::BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) {
  OnHome(std::move(done), [=](volume::BlockDevice& d, ExtentsDone back) {
    d.BlockStatus(offset, length, std::move(back));
  });
}

}  // namespace dst::server
