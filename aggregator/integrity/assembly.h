// Assembly checks: given the superblocks read from the members named on the command line, decide
// whether they form one complete volume and put them in member-index order. Pure: the caller
// reads the slots (ChooseSlot) and builds the volume from the result. Also the UUID helpers that
// creation and inspection share.
//
// Contract: OrderMembers either returns every member of one volume exactly once, ordered by
// member index, with identical volume parameters; or EINVAL with a one-line message naming the
// URIs (and UUIDs) at fault. It does not look at event counters or member states: which member's
// superblock is freshest is the caller's decision. Nor does it compare what version 2 members
// legitimately disagree on (generation and history, epochs, slot states, stale-since, cursors,
// flags, slot owners): which copies are current is decided from those elsewhere.
//
// Threading: pure functions; safe from any thread. NewUuid() creates its own random_device.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/integrity/superblock.h"
#include "common/status.h"

namespace dst::integrity {

// A member's superblock and where it came from, for messages.
struct MemberSuperblock {
  std::string uri;
  Superblock superblock;
};

// Checks, in order: all members belong to the first one's volume (UUID), agree on the member
// count, layout, copies, chunk, block and region size, checksum algorithm and key identity, and
// volume size; no member index or member UUID appears twice; no index is missing; the layout built
// from the members' data areas (over the sets of copies for mirror and raid10) has the recorded
// volume size. On success *out holds the members ordered by index; on error it is untouched.
Status OrderMembers(std::vector<MemberSuperblock> members, std::vector<MemberSuperblock>* out);

// For mirror and raid10, whose members may be missing at start: OrderMembers' checks except
// completeness (which members must be there is the redundant assembly decision's call). *out has
// one entry per slot (member index), nullopt for a slot no member was given for. The volume size
// is checked with each set measured by a copy present (copies share their areas); a set with no
// copy present is left to the decision, which refuses it.
Status PlaceRedundantMembers(std::vector<MemberSuperblock> members,
                             std::vector<std::optional<MemberSuperblock>>* out);

// Checks the checksum key given at assembly (empty: none) against the volume's key identity:
// a keyed volume needs the very key it was created with; an unkeyed one refuses a key, since the
// user evidently expects protection the volume does not have. For an encrypted volume `key` is
// the master key, checked against the key check. EINVAL.
Status CheckChecksumKey(const Superblock& sb, std::span<const uint8_t> key);

// "0123abcd-...": 8-4-4-4-12 lower-case hex digits.
std::string FormatUuid(const Uuid& uuid);
// Inverse of FormatUuid; upper-case digits are accepted too. nullopt for anything else.
std::optional<Uuid> ParseUuid(std::string_view text);
// A random (version 4, RFC 4122 variant) UUID from std::random_device.
Uuid NewUuid();

}  // namespace dst::integrity
