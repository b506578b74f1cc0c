// BlockDevice: what the NBD server serves. A raw Volume is one (members as
// they are); an integrity::ChecksummedVolume is another (a Volume over the
// members' data areas, with checksums verified on the way). The server only
// sees this interface.
//
// Threading: single event-loop thread. Callers check ranges and read-only
// status before calling; implementations do not. `done` is called exactly
// once, usually later from the event loop, but possibly before the call
// returns (e.g. a flush with no member to flush). A read that succeeds has
// written every byte of `buf`, holes included: callers do not initialise it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/volume/device_state.h"
#include "aggregator/volume/member_io.h"
#include "common/callback.h"
#include "common/status.h"

namespace dst::volume {

struct VolumeCapabilities {
  bool read_only = false;
  bool can_trim = false;
  bool can_zero = true;  // always: emulated by writing zeros where needed
  bool can_fast_zero = false;
  bool can_cache = false;
  bool can_block_status = false;
  // Requests aligned to it cost no read-modify-write; it is advertised to
  // clients that agree to keep to it. Every device serves any alignment.
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_payload = 32u << 20;
};

// A byte range of the device.
struct ByteRange {
  uint64_t offset;
  uint64_t length;

  bool operator==(const ByteRange&) const = default;
};

class BlockDevice {
 public:
  // Callbacks keep the captures of a request (its connection and its state) in place: no
  // allocation of their own (common/callback.h).
  using Done = Callback<void(int err)>;
  // `holes`: parts of the read, in ascending order, that the device knows to
  // be unwritten (they read as zeros); a server may send them as holes.
  using ReadDone = Callback<void(int err, std::vector<ByteRange> holes)>;
  using ExtentsDone = Callback<void(int err, std::vector<AllocationExtent> extents)>;

  virtual ~BlockDevice() = default;

  virtual const std::string& name() const = 0;
  virtual const std::string& description() const = 0;
  virtual uint64_t size() const = 0;
  virtual const VolumeCapabilities& capabilities() const = 0;
  // Layout, members and (checksummed devices) integrity, for status and metrics.
  virtual DeviceState State() const { return {}; }

  virtual void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) = 0;
  virtual void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) = 0;
  // Completes once everything acknowledged before it is durable.
  virtual void Flush(Done done) = 0;
  virtual void Trim(uint64_t offset, uint64_t length, bool fua, Done done) = 0;
  virtual void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
                    Done done) = 0;
  virtual void Cache(uint64_t offset, uint64_t length, Done done) = 0;
  // base:allocation of [offset, offset+length), possibly shorter than asked.
  virtual void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) = 0;
  // A read-only view of the device as of `point`, the text after the '@' of an export name
  // VOLUME@POINT (docs/staging-log.md, "Snapshots"). Only a volume served through a staging log
  // has them; EINVAL with the reason otherwise.
  virtual Status OpenSnapshot(std::string_view /*point*/, std::shared_ptr<BlockDevice>* /*out*/) {
    return Status::Invalid("volume " + name() + " has no staging log (serve --log): no snapshots");
  }
};

}  // namespace dst::volume
