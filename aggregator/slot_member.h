// A new NbdMember for a slot of a mirror or raid10 volume while `serve` runs: a member that comes
// back (member_return.h) and a new member (member_add.h) both get one, connected, handed to the
// volume and, once the volume took it, kept by the Server as the slot's member.
//
// Threading: the event loop's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "aggregator/control/runtime.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/member/member_tls.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member/transaction_policy.h"

namespace dst::aggregator {

// A mirror or raid10 volume whose slots take new members while serving.
struct SlotVolume {
  integrity::ChecksummedVolume* volume = nullptr;
  size_t volume_index = 0;  // in Server::volumes
  // By slot: the options its member got at start (RedundantMemberOptions).
  std::vector<member::TransactionOptions> options;
};

// The member for `uri` in slot `slot` of `volume`, with the slot's options and its fence epoch
// above every one the slot's present member used: the export node may still hold that member's
// fence session for the slot, and refuses an older epoch. As at start, a member fenced out by a
// newer owner stops the volume's writes (ChecksummedVolume::Supersede). Not connected yet.
std::unique_ptr<member::NbdMember> NewSlotMember(control::Server& server, const SlotVolume& volume,
                                                 uint32_t slot, const std::string& uri,
                                                 unsigned connections,
                                                 const member::MemberTls& tls);

// `member` becomes the member of slot `slot` of volume `volume_index` (named `volume`) in
// Server::members and Server::member_refs (status, metrics, stats lines): it takes the place of
// the slot's present member, which moves to Server::retired_members, still alive (completions of
// its last I/Os may still name it); a slot without one gets a ref where the slot's order puts it.
void InstallSlotMember(control::Server& server, const std::string& volume, size_t volume_index,
                       uint32_t slot, std::unique_ptr<member::NbdMember> member);

// The slot's member in Server::member_refs, nullptr when it has none (missing at start).
control::MemberRef* SlotMemberRef(control::Server& server, size_t volume_index, uint32_t slot);

}  // namespace dst::aggregator
