// LoopCopyDevice: a raw volume as a connection on another loop than home reaches it when its loop
// has a copy of the volume (aggregator/loop_volumes.h): every request goes to the copy, over the
// loop's own member connections, and crosses no thread, with one exception. A volume whose
// minimum block is over one byte merges unaligned writes (read-modify-write) under the home
// volume's range lock, which orders them only against what the home volume writes. So such a
// volume's unaligned writes and zeroes go to the home loop's volume (through `home`), and its
// other writes, zeroes and trims go to the copy only while it has never merged (MergeGate); from
// its first merge on they go home too.
//
// Threading: constructed, called and destroyed on the connection's loop, like the copy.
#pragma once

#include <utility>

#include "aggregator/server/export_registry.h"
#include "aggregator/volume/block_device.h"
#include "aggregator/volume/merge_gate.h"

namespace dst::server {

class LoopCopyDevice final : public volume::BlockDevice {
 public:
  // `copy` is loop `loop`'s; `home` a HomeLoopDevice of the same volume. Both outlive this.
  LoopCopyDevice(LoopCopy copy, volume::BlockDevice& home, size_t loop)
      : copy_(*copy.device), gate_(copy.gate), home_(home), loop_(loop) {}

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
    Modify(offset, length, true, std::move(done), [&](volume::BlockDevice& d, Done end) {
      d.Write(offset, length, buf, fua, std::move(end));
    });
  }
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override {
    // A trim never merges (it shrinks to whole blocks), but is ordered against merges.
    Modify(offset, length, false, std::move(done),
           [&](volume::BlockDevice& d, Done end) { d.Trim(offset, length, fua, std::move(end)); });
  }
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override {
    Modify(offset, length, true, std::move(done), [&](volume::BlockDevice& d, Done end) {
      d.Zero(offset, length, may_trim, fast_only, fua, std::move(end));
    });
  }

 private:
  // Runs `call` on the copy when the gate lets it (leaving the gate when done), else home.
  // `merges`: whether an unaligned request of this kind is merged.
  template <typename Call>
  void Modify(uint64_t offset, uint64_t length, bool merges, Done done, Call call) {
    if (!gate_) return call(copy_, std::move(done));
    const uint64_t block = copy_.capabilities().min_block;
    const bool aligned = offset % block == 0 && length % block == 0;
    if ((merges && !aligned) || !gate_->Enter(loop_)) return call(home_, std::move(done));
    call(copy_, [gate = gate_, loop = loop_, done = std::move(done)](int err) mutable {
      gate->Leave(loop);
      done(err);
    });
  }

  volume::BlockDevice& copy_;
  volume::MergeGate* const gate_;  // nullptr: the volume never merges
  volume::BlockDevice& home_;
  const size_t loop_;
};

}  // namespace dst::server
