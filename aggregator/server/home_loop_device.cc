#include "aggregator/server/home_loop_device.h"

#include <utility>

namespace dst::server {

template <typename DoneType, typename Call>
void HomeLoopDevice::OnHome(DoneType done, Call call) {
  // The completion goes back to the connection's loop, with what it captured: the request, the
  // connection, and whatever the device handed it (holes, extents).
  DoneType back = [loop = loop_, done = std::move(done)](auto... results) mutable {
    asio::post(loop, [done = std::move(done), ... results = std::move(results)]() mutable {
      done(std::move(results)...);
    });
  };
  asio::post(home_, [&device = view_.device(), call = std::move(call),
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
