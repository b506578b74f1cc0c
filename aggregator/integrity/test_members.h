// Test helpers for the checksummed data path: MemMember, an in-memory member whose every I/O
// completes later, from the io_context, never inside Submit(). It can fail or corrupt chosen
// I/Os, hold completions back to reorder them, and logs every I/O with the times (on one clock
// shared by all members) it was submitted and completed, so that tests can assert what reached
// which member, and in which order. Plus Pump() and RunFor() to drive the loop.
//
// Threading: one thread, the io_context's.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/member_format.h"
#include "aggregator/volume/member_io.h"

namespace dst::integrity::testing {

using volume::MemberIo;
using volume::MemberOp;

inline constexpr uint64_t KiB = 1024;
inline constexpr uint64_t MiB = 1024 * KiB;
inline constexpr int kPending = -1;  // a callback that has not run yet

inline std::vector<uint8_t> Pattern(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(size);
  for (uint8_t& b : out)
    b = static_cast<uint8_t>(rng());
  return out;
}

inline bool AllZero(const uint8_t* data, size_t size) {
  return std::all_of(data, data + size, [](uint8_t b) { return b == 0; });
}

// ---------------------------------------------------------------------------
// An in-memory member.

class MemMember final : public volume::MemberTarget {
 public:
  struct Record {
    MemberOp op;
    uint64_t offset;
    uint64_t length;
    uint64_t submitted;      // on the clock shared by all members
    uint64_t completed = 0;  // 0 while in flight
    int result = 0;
    std::vector<uint8_t> written;  // what a write of up to one metadata page carried
  };
  // Hits I/Os of kind `op` that overlap [from, to) of the member.
  struct Fault {
    MemberOp op;
    uint64_t from;
    uint64_t to;
    int err = EIO;
    bool corrupt = false;  // instead of failing, a read returns byte `from` flipped
    int times = -1;        // how many more I/Os it hits; -1: all
  };

  MemMember(asio::io_context& io, uint64_t* clock, std::string name, uint64_t size,
            volume::MemberCapabilities caps)
      : bytes(size, 0), io_(io), clock_(clock), name_(std::move(name)), caps_(caps) {
    caps_.size = size;
  }

  const volume::MemberCapabilities& capabilities() const override { return caps_; }
  const std::string& name() const override { return name_; }

  void Submit(std::shared_ptr<MemberIo> io) override {
    const size_t index = log.size();
    log.push_back({io->op, io->offset, io->length, ++*clock_, 0, 0, {}});
    if (io->op == MemberOp::kWrite && io->length <= kMetadataPageSize)
      log.back().written.assign(io->data, io->data + io->length);
    if (hold && hold(*io)) {
      held_.push_back({std::move(io), index});
      return;
    }
    asio::post(io_, [this, io = std::move(io), index] { Complete(*io, index); });
  }

  // Lets the held completions run, in submission order or reversed.
  void Release(bool reverse = false) {
    auto held = std::exchange(held_, {});
    if (reverse) std::reverse(held.begin(), held.end());
    for (auto& [io, index] : held)
      asio::post(io_, [this, io = std::move(io), index = index] { Complete(*io, index); });
  }
  size_t held() const { return held_.size(); }

  // Submitted I/Os of kind `op` overlapping `area` (any, for flushes), from log entry `since` on.
  std::vector<Record> Ops(MemberOp op, Area area = {0, UINT64_MAX}, size_t since = 0) const {
    std::vector<Record> out;
    for (size_t i = since; i < log.size(); ++i) {
      const Record& r = log[i];
      if (r.op != op) continue;
      if (op == MemberOp::kFlush ||
          (r.offset < area.offset + area.size && area.offset < r.offset + r.length))
        out.push_back(r);
    }
    return out;
  }
  size_t Count(MemberOp op, Area area = {0, UINT64_MAX}, size_t since = 0) const {
    return Ops(op, area, since).size();
  }

  std::vector<uint8_t> bytes;
  std::vector<Record> log;
  std::vector<Fault> faults;
  std::function<bool(const MemberIo&)> hold;  // completions it matches wait for Release()

 private:
  void Complete(MemberIo& io, size_t index) {
    int err = 0;
    const Fault* corrupt = nullptr;
    for (Fault& f : faults) {
      if (f.times == 0 || f.op != io.op) continue;
      if (io.op != MemberOp::kFlush && !(io.offset < f.to && f.from < io.offset + io.length))
        continue;
      if (f.times > 0) --f.times;
      if (f.corrupt)
        corrupt = &f;
      else
        err = f.err;
      break;
    }
    // What an NBD member does with requests it cannot take (NbdMember: EINVAL).
    if (err == 0 && (io.op == MemberOp::kRead || io.op == MemberOp::kWrite) &&
        io.length > caps_.max_request)
      err = EINVAL;
    if (err == 0 && io.op != MemberOp::kFlush && io.offset + io.length > bytes.size()) {
      FAIL_CHECK("I/O beyond the member: " << io.offset << "+" << io.length);
      err = EINVAL;
    }
    if (err == 0) {
      switch (io.op) {
        case MemberOp::kRead:
          std::memcpy(io.data, bytes.data() + io.offset, io.length);
          if (corrupt && corrupt->from >= io.offset && corrupt->from < io.offset + io.length)
            io.data[corrupt->from - io.offset] ^= 0xff;
          break;
        case MemberOp::kWrite:
          std::memcpy(bytes.data() + io.offset, io.data, io.length);
          break;
        case MemberOp::kTrim:
        case MemberOp::kZero:
          std::memset(bytes.data() + io.offset, 0, io.length);
          break;
        case MemberOp::kBlockStatus:
          io.extents.push_back({io.length, 0});
          break;
        default:
          break;
      }
    }
    log[index].completed = ++*clock_;
    log[index].result = err;
    io.done(err);
  }

  asio::io_context& io_;
  uint64_t* clock_;
  std::string name_;
  volume::MemberCapabilities caps_;
  std::vector<std::pair<std::shared_ptr<MemberIo>, size_t>> held_;
};

inline volume::MemberCapabilities MemberCaps() {
  volume::MemberCapabilities caps;
  caps.can_flush = true;
  caps.can_fua = true;
  caps.can_trim = true;
  caps.can_zero = true;
  return caps;
}

// Runs ready handlers until `until` holds or nothing is left to run (held completions wait).
inline bool Pump(asio::io_context& io, const std::function<bool()>& until) {
  for (int round = 0; round < 1000; ++round) {
    if (until()) return true;
    io.restart();
    if (io.poll() == 0) return until();
  }
  return until();
}

// Runs the loop in real time (for the cleaner's timer) until `until` holds, at most `limit`.
inline bool RunFor(asio::io_context& io, std::chrono::milliseconds limit,
                   const std::function<bool()>& until) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!until() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  return until();
}

}  // namespace dst::integrity::testing
