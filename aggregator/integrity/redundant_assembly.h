// Assembly of a redundant (mirror or raid10) volume: given what the reachable members' superblocks
// say, decide which slots are current, which are stale and how they catch up, and whether the
// volume may be served at all. One pure function, so that every combination of generations,
// events and states can be tested (docs/redundancy.md "Assembly").
//
// The input is deliberately not the on-disk Superblock: MemberView holds only the fields the
// decision reads, in plain types, and the caller copies them out of a decoded superblock. A UUID
// is a 16-byte array (the same type as integrity::Uuid); SlotState mirrors the on-disk member-state
// codes of docs/format.md (1 active, 2 failed, 3 missing, 4 stale, 5 rebuilding, 6 spare, 7
// resyncing), so the conversion is a cast of the code. "Slot" here is a member's position in the
// volume (its member index; slot s is copy s % copies of set s / copies), not one of a member's two
// superblock copies.
//
// Contract: DecideAssembly never does I/O and never fails in any other way than by returning a
// refusal. Its result does not depend on the order of the members given. Every slot gets a role
// and a one-line reason naming the rule that fired; a refusal names the slots and the way out.
// Refusals, the first that applies: inconsistent input; a replaced member; split brain; a set
// with no current copy; a missing current member without --allow-degraded.
// The freshest superblock (highest ownership epoch, then event) is the only one whose view of the
// slots is read: a member's own superblock never promotes it nor clears what the freshest says
// it missed (the shape of LINBIT/drbd#145).
//
// Threading: pure functions on values; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dst::integrity::redundancy {

using Uuid = std::array<uint8_t, 16>;

// The on-disk member-state array has this many entries; a volume has at most this many slots.
inline constexpr uint32_t kMaxSlots = 64;

// A slot's state as the superblocks record it. On-disk codes: never renumber.
enum class SlotState : uint8_t {
  kUnused = 0,      // beyond the member count
  kActive = 1,      // current: receives every write, may serve reads
  kFailed = 2,      // failed by the operator or an error; treated as stale
  kMissing = 3,     // recorded missing; treated as stale
  kStale = 4,       // missed writes since stale-since; catches up from the missed-write maps
  kRebuilding = 5,  // being copied in full; its cursor is valid
  kSpare = 6,       // holds no copy
  kResyncing = 7,   // catching up from the maps; its cursor is valid
};

// What a reachable member's superblock says, as the decision needs it.
struct MemberView {
  uint32_t slot = 0;  // the member index it claims
  Uuid member_uuid{};
  Uuid generation{};
  std::array<Uuid, 2> history{};  // previous generations, newest first; zero = none
  uint64_t event = 0;
  uint64_t ownership_epoch = 0;
  uint64_t map_epoch = 0;  // event at which the missed-write maps were last all clear
  uint32_t copies = 0;     // K
  uint32_t member_count = 0;
  std::array<SlotState, kMaxSlots> slot_states{};
  std::array<uint64_t, kMaxSlots> stale_since{};  // 0 while the slot is active
  std::array<Uuid, kMaxSlots> slot_members{};     // the member UUID that owns each slot
};

struct AssemblyOptions {
  bool allow_degraded = false;           // --allow-degraded
  std::optional<uint32_t> discard_slot;  // --discard SLOT
};

// What assembly does with a slot.
enum class SlotRole : uint8_t {
  kCurrent,       // serves reads, acks writes
  kStaleResync,   // catches up from the missed-write maps (bitmap resync)
  kStaleRebuild,  // catches up by a full copy: the maps no longer cover what it missed
  kRebuilding,    // discarded with --discard: rebuilt in full, its data never merged
  kMissing,       // not reachable
  kSpare,         // reachable, holds no copy
  kRefused,       // reachable but not accepted: a replaced member or a diverged generation
};

// The rule that decided a slot's role (docs/redundancy.md names them the same way).
enum class Rule : uint8_t {
  kCurrent,          // generation, event, owner and the freshest's state all agree
  kMarkedStale,      // the freshest superblock marks the slot failed/missing/stale/rebuilding/...
  kOlderGeneration,  // its generation is in the freshest superblock's history
  kBehind,           // same generation but more than one event behind: missed updates
  kDiscarded,        // --discard SLOT
  kMissingCurrent,   // missing, though the freshest superblock marks it active
  kMissingStale,     // missing, and the freshest superblock already marks it not current
  kSpare,            // the freshest superblock marks it spare
  kNotOwner,         // its member UUID does not own the slot: a replaced member
  kSplitBrain,       // its generation diverged from the freshest one, or it is on the freshest's
                     // side of such a divergence
};

struct SlotVerdict {
  SlotRole role = SlotRole::kMissing;
  Rule rule = Rule::kMissingCurrent;
  std::string reason;  // one line, for logs and status
};

struct AssemblyDecision {
  // OK when the volume may be served; otherwise EINVAL with the refusal (split brain, a set
  // without a current copy, a missing current member, a replaced member, inconsistent input).
  Status status;
  // One verdict per slot, indexed by slot; filled whenever the input is consistent, refused or
  // not, so that a refusal can be explained slot by slot. Empty for inconsistent input.
  std::vector<SlotVerdict> slots;
  std::optional<uint32_t> freshest_slot;  // whose superblock was read for the slots' states
  // The decision changes the current set (a slot the freshest marks active is not current, or a
  // slot was discarded): a new generation must be written to every current member before the
  // first write is served. Empty reason when false.
  bool new_generation = false;
  std::string new_generation_reason;
};

AssemblyDecision DecideAssembly(std::span<const MemberView> members,
                                const AssemblyOptions& options);

std::string_view SlotStateName(SlotState state);  // "active", "stale", ...
std::string_view SlotRoleName(SlotRole role);     // "current", "stale (bitmap resync)", ...
std::string_view RuleName(Rule rule);             // "current", "marked-stale", ...

}  // namespace dst::integrity::redundancy
