// HomeLoopDevice: a device that lives on the home event loop, as a client connection on another
// loop uses it (event_loops.h). Every call is posted to the home loop and made there; its
// completion is posted back to the connection's loop, where `done` runs and is destroyed. The
// caller's buffers stay where they are: the connection keeps them alive until `done`, as it does
// for a device on its own loop.
//
// What the connection reads of the device (name, size, capabilities) was copied on the home loop
// when the handshake chose it and is served from the copy: none of it changes while a volume is
// served.
//
// Threading: constructed, called and destroyed on the connection's loop; `device` is only ever
// touched on `home`.
#pragma once

#include <memory>
#include <string>

#include <asio.hpp>

#include "aggregator/volume/block_device.h"

namespace dst::server {

class HomeLoopDevice final : public volume::BlockDevice {
 public:
  // `device`'s name, description, size and capabilities as copied on the home loop.
  struct Copy {
    std::string name;
    std::string description;
    uint64_t size = 0;
    volume::VolumeCapabilities caps;
  };

  HomeLoopDevice(volume::BlockDevice& device, Copy copy, asio::any_io_executor home,
                 asio::any_io_executor loop)
      : device_(device), copy_(std::move(copy)), home_(std::move(home)), loop_(std::move(loop)) {}

  const std::string& name() const override { return copy_.name; }
  const std::string& description() const override { return copy_.description; }
  uint64_t size() const override { return copy_.size; }
  const volume::VolumeCapabilities& capabilities() const override { return copy_.caps; }

  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override;
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override;
  void Flush(Done done) override;
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override;
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override;
  void Cache(uint64_t offset, uint64_t length, Done done) override;
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override;

 private:
  // Runs `call(device, back)` on the home loop, where `back` posts `done`'s arguments to this
  // connection's loop and calls `done` there.
  template <typename DoneType, typename Call>
  void OnHome(DoneType done, Call call);

  volume::BlockDevice& device_;
  const Copy copy_;
  const asio::any_io_executor home_;
  const asio::any_io_executor loop_;
};

}  // namespace dst::server
