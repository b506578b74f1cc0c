// MirrorSet: the K copies of one set of a mirror or raid10 volume presented as
// one member (docs/redundancy.md). Every copy of a set has the same areas
// (docs/format.md §7.5), so one member offset means the same bytes on each, and
// the layers above (the checksummed volume, its table cache and write-intent
// bitmap, the inner Volume) address the set exactly as they address a member.
//
// The rules, after md raid1 and qemu's quorum driver (a parent request with a
// child request per copy):
//   - Writes, TRIM, WRITE_ZEROES and FLUSH go to every written copy (current
//     and catching-up) with the same parameters and the same buffer. The I/O is
//     done when every copy has answered; it succeeds when every current copy
//     did.
//   - A copy that fails an I/O is demoted through SetHealth, unless it is the
//     last current copy of the set (then the I/O fails with its errno and the
//     copy stays current, as md keeps its last device). From that moment the
//     set neither writes nor reads it. An I/O that a current copy failed
//     completes only once the demotion is durable: with 0 (the other current
//     copies have the data and the superblocks say so), or with the error
//     that kept the demotion from being durable.
//   - Reads, CACHE and BLOCK_STATUS go to one copy chosen by read_balance.h;
//     on an error the next copy is tried at once, and the copy that failed is
//     demoted as for a write (not waited for). `served_by` names the copy that
//     answered; EIO naming every copy tried when none could.
//   - A replacement (`member replace`) is one more copy past the K of the set:
//     catching up (written, not read, not counted) while it is rebuilt, then
//     ExchangeTargets gives the slot's copy its target. An answer is judged by
//     where its target is now, so that a write the new member failed after the
//     exchange counts against the copy it has become.
//   - `only_copy` sends an I/O to that copy alone, whatever its role (ENXIO
//     when there is no such copy or it has no target); `avoid_copies` keeps a
//     read off the copies named. Neither demotes anything: the caller asked
//     for that copy and handles its answer.
//
// Contract: the set never completes an I/O from inside Submit(); it calls
// `done` exactly once, from a copy's completion (which is on the event loop)
// or from a posted continuation. It holds no timers: a copy that does not
// answer fails its I/O when the member's own retry window ends (members of
// redundant volumes run with the shorter --degrade-after window).
//
// Threading: the event-loop thread only, like the members it wraps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/volume/member_io.h"
#include "aggregator/volume/read_balance.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::volume {

// What the set does with a copy.
enum class CopyRole : uint8_t {
  kCurrent,     // written and read; counted for the ack
  kCatchingUp,  // resyncing or rebuilding: written; read only below its cursor; not counted
  kOut,         // stale, failed, missing or spare: neither written nor read
};

// "current", "catching-up", "out": for logs and status.
const char* CopyRoleName(CopyRole role);

// The owner of the copies' durable state (the checksummed volume, which writes
// the superblocks).
class SetHealth {
 public:
  virtual ~SetHealth() = default;
  // Copy `copy` of set `set` failed an I/O (`cause` says which and why): make
  // it stale on every reachable copy's superblock, then call `durable(0)`, or
  // `durable(err)` when that could not be made durable. Called at most once
  // per copy while a demotion is pending: the set joins later failures of the
  // same copy to the pending one.
  virtual void Demote(uint32_t set, uint32_t copy, std::string cause,
                      std::function<void(int err)> durable) = 0;
};

// One copy as the set starts with it.
struct CopySetup {
  MemberTarget* target = nullptr;  // nullptr for a missing copy (role must be kOut)
  CopyRole role = CopyRole::kCurrent;
  bool write_mostly = false;
  uint64_t cursor = 0;  // kCatchingUp: bytes of the set below which the copy is current
};

class MirrorSet final : public MemberTarget {
 public:
  // `copies` in copy order (member i of the volume is copy i % K of set i / K).
  // Targets and `health` outlive the set. At least one copy must be current.
  MirrorSet(asio::io_context& io, uint32_t set, std::vector<CopySetup> copies, SetHealth* health);
  ~MirrorSet() override;
  MirrorSet(const MirrorSet&) = delete;
  MirrorSet& operator=(const MirrorSet&) = delete;

  // The copies' capabilities combined so that any copy can take what the set
  // accepts: the smallest size and max_request, the largest min_block and
  // preferred_block, a feature only when every copy with a target has it.
  const MemberCapabilities& capabilities() const override { return caps_; }
  // "set 0 (nbd://a, nbd://b)".
  const std::string& name() const override { return name_; }
  void Submit(std::shared_ptr<MemberIo> io) override;

  uint32_t set() const { return set_; }
  // The set's own copies (K); a replacement, when there is one, is copy K.
  uint32_t copy_count() const { return slot_copies_; }
  MemberTarget* copy(uint32_t c) const { return copies_[c].target; }
  CopyRole role(uint32_t c) const { return copies_[c].role; }
  // A demotion of copy `c` was asked of SetHealth and is not durable yet.
  bool demoting(uint32_t c) const { return copies_[c].demoting; }
  uint32_t current_copies() const;
  // md's notation: "UU_", one letter per copy: U current, C catching up,
  // _ out. A copy being demoted is already "_". A replacement that is not out
  // follows a '+': "UU+C".
  std::string Health() const;

  // Run-time changes by the owner (assembly, resync): effective for I/Os
  // submitted from now on.
  void SetRole(uint32_t c, CopyRole role, uint64_t cursor = 0);
  void SetWriteMostly(uint32_t c, bool write_mostly);
  bool write_mostly(uint32_t c) const { return copies_.at(c).write_mostly; }
  // A copy that is out (and not being demoted) gets a new target: a member that came back
  // (checksummed_return.cc). The set's capabilities stay what they are, since the layers above
  // were built on them: a target that cannot take them is refused with EINVAL (a smaller size or
  // max_request, a larger min_block, a feature the set has and it lacks, read-only when the set
  // is not). EBUSY when the copy is not out or is being demoted, ERANGE for no such copy. The
  // previous target gets no new I/O; answers it still owes complete their I/Os as before but
  // never demote the copy (it is someone else now).
  Status SetTarget(uint32_t c, MemberTarget* target);

  // `member replace`: `target` becomes copy K (copy_count()), catching up from 0, checked as
  // SetTarget checks a target. EBUSY while copy K is not out or is being demoted.
  Status AttachReplacement(MemberTarget* target);
  uint32_t replacement_copy() const { return slot_copies_; }
  // Copies `a` and `b` exchange their targets; roles, cursors and write-mostly flags stay with
  // the copies (the caller sets the roles). EBUSY when either is being demoted.
  Status ExchangeTargets(uint32_t a, uint32_t b);

  // Reads of copy `c` served by another copy after `c` failed them.
  uint64_t read_failovers(uint32_t c) const { return copies_[c].read_failovers; }

 private:
  struct Copy {
    MemberTarget* target = nullptr;
    CopyRole role = CopyRole::kOut;
    bool write_mostly = false;
    uint64_t cursor = 0;
    uint64_t bytes_in_flight = 0;
    uint64_t read_failovers = 0;
    // A demotion asked of SetHealth and not yet durable: who waits for it.
    bool demoting = false;
    std::vector<std::function<void(int err)>> demotion_waiters;
  };
  struct Fanout;
  struct Read;

  void ComputeCapabilities();
  // "set 0 (nbd://a, missing)".
  static std::string NameOf(uint32_t set, const std::vector<Copy>& copies, uint32_t k);
  Status CanTake(const MemberTarget& target) const;
  void SubmitToAll(std::shared_ptr<MemberIo> io);
  void SubmitRead(std::shared_ptr<MemberIo> io);
  void SubmitToOne(std::shared_ptr<MemberIo> io, uint32_t c);
  // Asks SetHealth to demote copy `c` (joining a pending demotion); `durable`
  // gets its outcome.
  void Demote(uint32_t c, const std::string& cause, std::function<void(int err)> durable);
  std::vector<CopyLoad> Loads() const;
  // The copy `target` is now (an answer of a target that left the set: none).
  std::optional<uint32_t> IndexOf(const MemberTarget* target) const;

  asio::io_context& io_;
  uint32_t set_;
  std::vector<Copy> copies_;  // the K copies, then the replacement once there was one
  uint32_t slot_copies_;      // K
  SetHealth* health_;
  MemberCapabilities caps_;
  std::string name_;
  ReadStream stream_;
  // Copy answers and demotion outcomes that arrive after the set is gone
  // complete their I/O without touching it.
  Lifetime lifetime_;
};

}  // namespace dst::volume
