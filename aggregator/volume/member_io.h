// MemberIo: one I/O on one member, the unit that a Volume splits client
// requests into, and MemberTarget, what executes it. The volume layer only
// sees this interface; aggregator/member/ implements it over libnbd, and unit
// tests implement it in memory.
//
// A MemberIo is a self-contained, resendable object: it owns its parameters
// and a pointer into a buffer that outlives it, so a later transaction layer
// can resubmit the same object on a new connection.
//
// Threading: everything runs on the aggregator's single event-loop thread.
// `done` is always invoked from the event loop, never from inside Submit()
// and never from inside a libnbd callback.
#pragma once

#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/object_pool.h"

namespace dst::volume {

enum class MemberOp : uint8_t { kRead, kWrite, kFlush, kTrim, kZero, kCache, kBlockStatus };

// "read", "write", ...: for logs.
constexpr std::string_view MemberOpName(MemberOp op) {
  constexpr std::string_view kNames[] = {"read", "write", "flush",       "trim",
                                         "zero", "cache", "block-status"};
  return static_cast<size_t>(op) < std::size(kNames) ? kNames[static_cast<size_t>(op)] : "?";
}

// An allocation extent as NBD base:allocation reports it.
struct AllocationExtent {
  uint64_t length;
  uint32_t flags;  // NBD_STATE_HOLE | NBD_STATE_ZERO
};

struct MemberIo {
  MemberOp op = MemberOp::kRead;
  uint64_t offset = 0;
  uint64_t length = 0;
  // Read destination or write source, `length` bytes. A read that succeeds
  // has written all of them (callers need not initialise the buffer).
  uint8_t* data = nullptr;
  bool fua = false;
  bool may_trim = false;   // for kZero: the member may punch a hole
  bool fast_zero = false;  // for kZero: fail with ENOTSUP rather than be slow
  // For kBlockStatus: filled in order, starting at `offset`.
  std::vector<AllocationExtent> extents;
  // Set by the member when it fails the I/O: which member, what, and why
  // ("gave up after 7 sends in 60 s: connect: Connection refused").
  std::string failure;
  // Mirror sets (mirror_set.h) only; plain members ignore these three.
  // Send to this copy of the set only (a self-heal write, a targeted re-read,
  // a table page repair). -1: the set's own rules.
  int32_t only_copy = -1;
  // Copies a read must not use, bit c for copy c (a re-read after a checksum
  // mismatch).
  uint64_t avoid_copies = 0;
  // Set by a set on a read: the copy whose bytes are in `data`. -1 on a plain
  // member.
  int32_t served_by = -1;
  // errno: 0 on success.
  std::function<void(int err)> done;
};

// A new MemberIo (or a type derived from it, for a caller that keeps its own
// state beside the request in the same allocation) with the request part of
// `io` (operation, range, buffer and flags), and none of its routing, answers
// or completion: for one send of it (a resend, a copy of a set).
template <typename T = MemberIo>
std::shared_ptr<T> CopyRequest(const MemberIo& io) {
  auto copy = MakePooled<T>();
  copy->op = io.op;
  copy->offset = io.offset;
  copy->length = io.length;
  copy->data = io.data;
  copy->fua = io.fua;
  copy->may_trim = io.may_trim;
  copy->fast_zero = io.fast_zero;
  return copy;
}

// What a volume needs to know about a member to build a device from it.
struct MemberCapabilities {
  uint64_t size = 0;
  bool read_only = false;
  bool can_flush = false;
  bool can_fua = false;
  bool can_trim = false;
  bool can_zero = false;
  bool can_fast_zero = false;
  bool can_cache = false;
  bool can_multi_conn = false;
  bool can_block_status = false;  // base:allocation negotiated
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_request = 32u << 20;  // largest read/write payload it accepts
};

class MemberTarget {
 public:
  virtual ~MemberTarget() = default;
  virtual const MemberCapabilities& capabilities() const = 0;
  // A name for logs: the member's URI.
  virtual const std::string& name() const = 0;
  // Starts the I/O; io->done is called exactly once, later, on the event loop.
  // The caller keeps `io` alive until then (the shared_ptr is held inside).
  virtual void Submit(std::shared_ptr<MemberIo> io) = 0;
  // The volume gave up on this member (a demoted copy): fail everything queued
  // and in flight with EIO at once, and every later Submit too. Logged with
  // `why`. Members that cannot be abandoned ignore it.
  virtual void Abandon(const std::string& why) { (void)why; }
};

}  // namespace dst::volume
