// Test helper: MemMember, an in-memory member whose every I/O completes later, from the
// io_context, never inside Submit() (as a real member's do). It can fail or corrupt chosen
// I/Os, hold completions back to release them later (in order or reversed), and logs every
// I/O with the times (on a clock that members may share) it was submitted and completed, so
// that tests can assert what reached which member, and in which order. The one copy for the
// unit tests of the volume (mirror sets) and of the integrity layer.
//
// Threading: one thread, the io_context's.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "aggregator/volume/member_io.h"

namespace dst::volume::testing {

class MemMember : public MemberTarget {
 public:
  struct Record {
    MemberOp op;
    uint64_t offset;
    uint64_t length;
    const uint8_t* data;     // the caller's buffer (not a copy)
    uint64_t submitted;      // on the member's clock
    uint64_t completed = 0;  // 0 while in flight
    int result = 0;
    std::vector<uint8_t> written;  // a write's bytes, up to record_writes_up_to of them
  };
  // Hits I/Os of kind `op` (any kind: nullopt) that overlap [from, to) of the member.
  struct Fault {
    std::optional<MemberOp> op;
    uint64_t from = 0;
    uint64_t to = UINT64_MAX;
    int err = EIO;
    bool corrupt = false;  // instead of failing, a read returns byte `from` flipped
    int times = -1;        // how many more I/Os it hits; -1: all
  };

  // `clock`: shared by members whose logs are compared; null: the member's own.
  MemMember(asio::io_context& io, std::string name, uint64_t size, MemberCapabilities caps = {},
            uint64_t* clock = nullptr)
      : bytes(size, 0),
        io_(io),
        clock_(clock ? clock : &own_clock_),
        name_(std::move(name)),
        caps_(caps) {
    caps_.size = size;
  }

  const MemberCapabilities& capabilities() const override { return caps_; }
  const std::string& name() const override { return name_; }

  void Submit(std::shared_ptr<MemberIo> io) override {
    const size_t index = log.size();
    log.push_back({io->op, io->offset, io->length, io->data, ++*clock_, 0, 0, {}});
    if (io->op == MemberOp::kWrite && io->length <= record_writes_up_to)
      log.back().written.assign(io->data, io->data + io->length);
    if (hold && hold(*io)) {
      held_.push_back({std::move(io), index});
      return;
    }
    asio::post(io_, [this, io = std::move(io), index] { Complete(*io, index); });
  }

  // Lets the held completions run, in submission order or reversed; `hold` stays.
  void Release(bool reverse = false) {
    auto held = std::exchange(held_, {});
    if (reverse) std::reverse(held.begin(), held.end());
    for (auto& [io, index] : held)
      asio::post(io_, [this, io = std::move(io), index = index] { Complete(*io, index); });
  }
  // Holds every completion from now on, until StopHolding().
  void HoldAll() {
    hold = [](const MemberIo&) { return true; };
  }
  // Holds nothing any more, and lets the held completions run.
  void StopHolding() {
    hold = nullptr;
    Release();
  }
  size_t held() const { return held_.size(); }

  // The next `n` I/Os of any kind fail with `err`.
  void FailNext(int n, int err = EIO) {
    faults.insert(faults.begin(), Fault{{}, 0, UINT64_MAX, err, false, n});
  }

  // Submitted I/Os of kind `op` overlapping [offset, offset + size) (any, for flushes), from
  // log entry `since` on.
  std::vector<Record> OpsIn(MemberOp op, uint64_t offset, uint64_t size, size_t since) const {
    std::vector<Record> out;
    for (size_t i = since; i < log.size(); ++i) {
      const Record& r = log[i];
      if (r.op != op) continue;
      if (op == MemberOp::kFlush || (r.offset < offset + size && offset < r.offset + r.length))
        out.push_back(r);
    }
    return out;
  }
  size_t Count(MemberOp op) const { return OpsIn(op, 0, UINT64_MAX, 0).size(); }

  std::vector<uint8_t> bytes;
  std::vector<Record> log;
  std::vector<Fault> faults;                  // the first that hits an I/O decides
  std::function<bool(const MemberIo&)> hold;  // completions it matches wait for Release()
  uint32_t status_flags = 0;                  // what block status reports
  size_t record_writes_up_to = 0;             // Record::written for writes this small
  bool describe_failures = false;             // set MemberIo::failure on injected errors
  std::function<void(const MemberIo&)> before_complete;  // e.g. a check of the caller's state

 private:
  // The fault hitting `io` (counted), or null.
  Fault* Hit(const MemberIo& io) {
    for (Fault& f : faults) {
      if (f.times == 0 || (f.op && *f.op != io.op)) continue;
      if (io.op != MemberOp::kFlush && !(io.offset < f.to && f.from < io.offset + io.length))
        continue;
      if (f.times > 0) --f.times;
      return &f;
    }
    return nullptr;
  }

  int Check(const MemberIo& io, const Fault* fault) const {
    if (fault && !fault->corrupt) return fault->err;
    // What an NBD member does with requests it cannot take (NbdMember: EINVAL).
    if ((io.op == MemberOp::kRead || io.op == MemberOp::kWrite) && caps_.max_request != 0 &&
        io.length > caps_.max_request)
      return EINVAL;
    if (io.op != MemberOp::kFlush && io.op != MemberOp::kCache &&
        io.offset + io.length > bytes.size()) {
      FAIL_CHECK("I/O beyond the member: " << io.offset << "+" << io.length);
      return EINVAL;
    }
    return 0;
  }

  void Execute(MemberIo& io, const Fault* fault) {
    switch (io.op) {
      case MemberOp::kRead:
        std::memcpy(io.data, bytes.data() + io.offset, io.length);
        if (fault && fault->from >= io.offset && fault->from < io.offset + io.length)
          io.data[fault->from - io.offset] ^= 0xff;
        break;
      case MemberOp::kWrite:
        std::memcpy(bytes.data() + io.offset, io.data, io.length);
        break;
      case MemberOp::kTrim:
      case MemberOp::kZero:
        std::memset(bytes.data() + io.offset, 0, io.length);
        break;
      case MemberOp::kBlockStatus:
        io.extents = {{io.length, status_flags}};
        break;
      case MemberOp::kFlush:
      case MemberOp::kCache:
        break;
    }
  }

  void Complete(MemberIo& io, size_t index) {
    if (before_complete) before_complete(io);
    const Fault* fault = Hit(io);
    const int err = Check(io, fault);
    if (err == 0) Execute(io, fault);
    if (err != 0 && describe_failures)
      io.failure = name_ + ": injected " + std::string(MemberOpName(io.op)) + " failure";
    log[index].completed = ++*clock_;
    log[index].result = err;
    io.done(err);
  }

  asio::io_context& io_;
  uint64_t own_clock_ = 0;
  uint64_t* clock_;
  std::string name_;
  MemberCapabilities caps_;
  std::vector<std::pair<std::shared_ptr<MemberIo>, size_t>> held_;
};

}  // namespace dst::volume::testing
