// Member metadata I/O for the one-shot commands (`dst-aggregator create` and `inspect`) and for
// serve's assembly: read a member's two superblock slots, update one, and format a member
// (superblocks, zeroed bitmap and table).
//
// This is the only file of dst_member_metadata that touches libnbd, and it uses libnbd's blocking
// API on purpose: a command formats or reads a handful of members once, one after the other, with
// nothing else to do meanwhile, so the server's event loop (aggregator/member/) would only add
// machinery. The one exception is the connect, which is driven with a deadline
// (kMetadataConnectTimeout) so that an unreachable host fails the command instead of hanging it
// for the kernel's TCP timeout. Reads and writes then block until the member answers; a member
// that stops answering halfway is left to Ctrl-C.
//
// Contract: every function opens its own connection and closes it before returning, with the
// member TLS options applied as on the data path (member_tls.h). Errors carry
// libnbd's errno (EIO when it gives none) and name the URI and the operation:
// "member nbd://h/x: pwrite 4096 bytes at 0: Input/output error". Nothing is written to a member
// that is read-only, whose size differs from the superblock's, or whose superblock does not
// encode (the checks come before the first write).
//
// Threading: blocking; call from one thread. Separate calls share nothing and may run on
// different threads.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/integrity/superblock.h"
#include "aggregator/member/member_tls.h"
#include "common/status.h"

namespace dst::integrity {

inline constexpr std::chrono::milliseconds kMetadataConnectTimeout{15000};

// What one superblock slot holds, as inspect reports it.
enum class SlotState {
  kValid,    // decodes, and its event counter belongs in this slot
  kAbsent,   // no magic: never written, or not a dst member
  kTorn,     // magic, but the self-checksum does not match: a torn or corrupted write
  kInvalid,  // checksum good but a field is out of range, or the event belongs in the other slot
  kNewer,    // a format version or feature flags this dst does not know
};
// "valid", "absent", "torn", "invalid", "newer".
std::string_view SlotStateName(SlotState state);

struct SlotReport {
  SlotState state = SlotState::kAbsent;
  Status detail;          // why the slot is not valid; Ok() when it is
  Superblock superblock;  // meaningful when state == kValid
};

// One member as the commands see it: the export's properties and both slots.
struct MemberReadResult {
  uint64_t export_size = 0;  // the size the export advertises now
  bool read_only = false;
  uint32_t min_block_size = 1;  // the export's minimum block size (1 when it states none)
  std::array<std::vector<uint8_t>, kSlotCount> raw_slots;  // empty when the export is too small
  std::array<SlotReport, kSlotCount> slots;
  // ChooseSlot's verdict (ENOENT "no dst superblock" when neither slot has the magic); Ok() when
  // `choice` holds the current superblock.
  Status choice_status;
  SlotChoice choice;

  // True when either slot carries the superblock magic: the export has been (or was being)
  // formatted as a dst member, whether or not the superblock is usable now.
  bool HasMagic() const;
};

// Connects to `uri`, reads its size and both slots, and decides which slot is current. The
// returned Status is about the connection and the reads only: a member without a usable
// superblock is a successful read with !choice_status.ok(). An export smaller than the two slots
// reads as both slots absent.
Status ReadSuperblocks(const std::string& uri, const member::MemberTls& tls, MemberReadResult* out);

// Formats one member from `sb` (its event is ignored), durably and in this order, so that an
// interrupted create never leaves an old superblock in front of new metadata, nor a new
// superblock in front of stale metadata:
//   1. zero both slots, flush (an earlier superblock is gone);
//   2. zero everything from the bitmap to the end of the data area (bitmap, table, padding,
//      data), flush;
//   3. write slot 0 with event 0 and slot 1 with event 1, flush.
// The data area is zeroed because recovery recomputes checksums from data: a never-written block
// must hold zeros (docs/format.md). Zeroing uses NBD_CMD_WRITE_ZEROES where the export supports it,
// otherwise writes of zeros. Refuses (EROFS, EINVAL) a read-only export, or one whose size is not
// sb.geometry.member_size any more.
Status WriteNewMember(const std::string& uri, const member::MemberTls& tls, const Superblock& sb);

// Writes `sb` as a superblock update of an existing member: into slot NextSlot(sb.event), then
// flushes, so that it is current once this returns Ok (the other slot stays the fallback until the
// flush). The same refusals as WriteNewMember, before anything is written.
Status WriteSuperblock(const std::string& uri, const member::MemberTls& tls, const Superblock& sb);

}  // namespace dst::integrity
