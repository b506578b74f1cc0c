// DataAreaMember: a member seen through its data area only (docs/format.md),
// so that the volume layer maps and splits requests exactly as for a raw
// member while the metadata in front stays out of reach of client I/O.
//
// Threading: as the member it wraps.
#pragma once

#include <memory>
#include <string>

#include "aggregator/integrity/member_format.h"
#include "aggregator/volume/member_io.h"

namespace dst::integrity {

class DataAreaMember final : public volume::MemberTarget {
 public:
  DataAreaMember(volume::MemberTarget* member, const Area& data) : member_(member), data_(data) {
    caps_ = member->capabilities();
    caps_.size = data.size;
  }

  const volume::MemberCapabilities& capabilities() const override { return caps_; }
  const std::string& name() const override { return member_->name(); }
  void Submit(std::shared_ptr<volume::MemberIo> io) override {
    if (io->op != volume::MemberOp::kFlush) io->offset += data_.offset;
    member_->Submit(std::move(io));
  }

 private:
  volume::MemberTarget* member_;
  Area data_;
  volume::MemberCapabilities caps_;
};

}  // namespace dst::integrity
