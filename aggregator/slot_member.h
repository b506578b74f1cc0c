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
#include "aggregator/member/member_tls.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member/transaction_policy.h"

namespace dst::aggregator {

// The member for `uri` with `options` (the slot's at start, RedundantMemberOptions), its fence
// epoch above every one the slot's present member used: the export node may still hold that
// member's fence session for the slot, and refuses an older epoch. Not connected yet.
std::unique_ptr<member::NbdMember> NewSlotMember(control::Server& server, size_t volume_index,
                                                 uint32_t slot, const std::string& uri,
                                                 unsigned connections,
                                                 member::TransactionOptions options,
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
