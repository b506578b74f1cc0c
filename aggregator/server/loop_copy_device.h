// LoopCopyDevice: a raw volume as a connection on another loop than home reaches it when its loop
// has a copy of the volume (aggregator/loop_volumes.h): reads, flushes, block status and cache go
// to the copy, over the loop's own member connections, and cross no thread. Writes, zeroes and
// trims go there too when the volume's minimum block is one byte. With a larger minimum block they
// go to the home loop's volume (through `home`): a write that is not aligned to it is merged
// (read-modify-write) under the home volume's range lock, which orders it only against the
// modifications the home volume makes, so all of them are made there.
//
// Threading: constructed, called and destroyed on the connection's loop, like the copy.
#pragma once

#include "aggregator/volume/block_device.h"

namespace dst::server {

class LoopCopyDevice final : public volume::BlockDevice {
 public:
  // `copy` is this loop's; `home` a HomeLoopDevice of the same volume. Both outlive this.
  LoopCopyDevice(volume::BlockDevice& copy, volume::BlockDevice& home)
      : copy_(copy), modify_(copy.capabilities().min_block == 1 ? copy : home) {}

  // Whether writes, zeroes and trims stay on the loop too.
  bool modifies_here() const { return &modify_ == &copy_; }

  const std::string& name() const override { return copy_.name(); }
  const std::string& description() const override { return copy_.description(); }
  uint64_t size() const override { return copy_.size(); }
  const volume::VolumeCapabilities& capabilities() const override { return copy_.capabilities(); }

  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override {
    copy_.Read(offset, length, buf, std::move(done));
  }
  void Flush(Done done) override { copy_.Flush(std::move(done)); }
  void Cache(uint64_t offset, uint64_t length, Done done) override {
    copy_.Cache(offset, length, std::move(done));
  }
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override {
    copy_.BlockStatus(offset, length, std::move(done));
  }
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override {
    modify_.Write(offset, length, buf, fua, std::move(done));
  }
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override {
    modify_.Trim(offset, length, fua, std::move(done));
  }
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override {
    modify_.Zero(offset, length, may_trim, fast_only, fua, std::move(done));
  }

 private:
  volume::BlockDevice& copy_;
  volume::BlockDevice& modify_;  // copy_, or the home loop's volume
};

}  // namespace dst::server
