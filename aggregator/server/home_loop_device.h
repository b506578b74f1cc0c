// HomeLoopDevice: a device that lives on the home event loop, as a client connection on another
// loop uses it (event_loops.h). Every call is posted to the home loop and made there; its
// completion is posted back to the connection's loop, where `done` runs and is destroyed. The
// caller's buffers stay where they are: the connection keeps them alive until `done`, as it does
// for a device on its own loop.
//
// What the connection reads of the device (name, size, capabilities) is served from the
// connection's ExportView, copied on the home loop when the handshake chose it: none of it
// changes while a volume is served.
//
// Threading: constructed, called and destroyed on the connection's loop; the view's device is only
// ever touched on `home`.
#pragma once

#include <asio.hpp>

#include "aggregator/server/export_registry.h"
#include "aggregator/volume/block_device.h"

namespace dst::server {

class HomeLoopDevice final : public volume::BlockDevice {
 public:
  // `view` outlives this device (the connection holds both).
  // `home` and `loop` are executors of io_contexts (the event loops).
  HomeLoopDevice(const ExportView& view, const asio::any_io_executor& home,
                 const asio::any_io_executor& loop);

  const std::string& name() const override { return view_.name; }
  const std::string& description() const override { return view_.description; }
  uint64_t size() const override { return view_.size; }
  const volume::VolumeCapabilities& capabilities() const override { return view_.caps; }

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
  // connection's loop and calls `done` there. Both hand-overs are posted straight to the
  // io_contexts, with their handlers in the object pool: a request allocates nothing to cross.
  template <typename DoneType, typename Call>
  void OnHome(DoneType done, Call call);

  const ExportView& view_;
  const asio::io_context::executor_type home_;
  const asio::io_context::executor_type loop_;
};

}  // namespace dst::server
