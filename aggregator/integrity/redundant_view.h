// Between the on-disk superblock and the redundant assembly decision (redundant_assembly.h):
// MemberViewOf copies out of a decoded version 2 superblock the fields DecideAssembly reads, and
// ServingView builds the superblock a mirror or raid10 volume continues from once the decision
// is made (what ChecksummedVolume::CreateRedundant takes as its `view`).
//
// Contract: pure. ServingView changes only what the decision changed: slots it did not accept as
// current and that the freshest superblock still calls active are recorded stale, since the event
// they were last known to have (their own when they were read, else the freshest's); and when
// the decision asks for a new generation, the given one replaces the old, which goes to the
// front of the history. Everything else (event, epochs, identities) is the freshest's: the
// volume's Open() writes the result, with each member's own identity, to every member present.
//
// Threading: pure functions on values; safe from any thread.
#pragma once

#include <optional>
#include <span>

#include "aggregator/integrity/redundant_assembly.h"
#include "aggregator/integrity/superblock.h"

namespace dst::integrity {

// The decision's input from one member's superblock (which must be version 2).
redundancy::MemberView MemberViewOf(const Superblock& sb);

// The superblock the volume is served from. `read` holds, by slot, what each member present
// said (nullopt for a missing one); `freshest` is the slot whose superblock the result starts
// from (a current slot); `new_generation` is used when decision.new_generation.
Superblock ServingView(std::span<const std::optional<Superblock>> read, uint32_t freshest,
                       const redundancy::AssemblyDecision& decision, const Uuid& new_generation);

}  // namespace dst::integrity
