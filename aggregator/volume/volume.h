// Volume: one NBD device served to clients, built from members by a Layout.
// It turns a client request into one parent request of member I/Os (split at
// member and chunk boundaries and at each member's maximum request size),
// issues them all at once and completes the parent when the last part does,
// with the first error any part reported.
//
// The volume derives its capabilities from its members: read-only if any
// member is, TRIM/WRITE_ZEROES/FAST_ZERO/CACHE/BLOCK_STATUS where members
// support them, with fallbacks (writing zeros, reporting "data").
//
// Threading: single event-loop thread, like MemberTarget. Callers check
// ranges and read-only status before calling; Volume does not.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aggregator/volume/block_device.h"
#include "aggregator/volume/layout.h"
#include "aggregator/volume/member_io.h"
#include "common/status.h"

namespace dst::volume {

class Volume final : public BlockDevice {
 public:
  // Members must outlive the volume. Their capabilities must be known.
  static Status Create(std::string name, std::string description, LayoutKind kind,
                       uint64_t chunk_size, std::vector<MemberTarget*> members,
                       std::unique_ptr<Volume>* out);

  const std::string& name() const override { return name_; }
  const std::string& description() const override { return description_; }
  uint64_t size() const override { return layout_->size(); }
  const Layout& layout() const { return *layout_; }
  const VolumeCapabilities& capabilities() const override { return caps_; }
  const std::vector<MemberTarget*>& members() const { return members_; }
  DeviceState State() const override { return {layout_->kind(), members_.size(), std::nullopt}; }

  // Reports no holes: a raw volume does not know which blocks were written.
  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override;
  // As Read, for callers that have no use for holes.
  void ReadData(uint64_t offset, uint64_t length, uint8_t* buf, Done done);
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override;
  // Sent to every member; completes after all of them.
  void Flush(Done done) override;
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override;
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override;
  void Cache(uint64_t offset, uint64_t length, Done done) override;
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override;

 private:
  class ParentRequest;
  Volume(std::string name, std::string description, std::unique_ptr<Layout> layout,
         std::vector<MemberTarget*> members);
  void DeriveCapabilities();
  // The member extents of a range, each at most `max_piece` bytes long
  // (0: each member's own maximum request size).
  std::vector<MemberExtent> Pieces(uint64_t offset, uint64_t length, uint64_t max_piece) const;
  void SubmitPiece(const std::shared_ptr<ParentRequest>& parent, const MemberExtent& piece,
                   MemberIo io);
  void SubmitReads(const std::shared_ptr<ParentRequest>& parent, uint64_t offset, uint64_t length,
                   uint8_t* buf);
  void LogPartFailure(const MemberIo& part, const MemberExtent& piece, int err) const;
  void ZeroPiece(const std::shared_ptr<ParentRequest>& parent, const MemberExtent& piece,
                 bool may_trim, bool fast_only, bool fua);

  std::string name_;
  std::string description_;
  std::unique_ptr<Layout> layout_;
  std::vector<MemberTarget*> members_;
  VolumeCapabilities caps_;
};

}  // namespace dst::volume
