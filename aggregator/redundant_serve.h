// Serving mirror and raid10 volumes: from the superblocks the members given to `serve` hold, the
// assembly decision (integrity/redundant_assembly.h) and the checksummed volume over copies
// (ChecksummedVolume::CreateRedundant). docs/redundancy.md "Assembly" is the operator's view.
//
// Contract: a member that cannot be reached or read at start is missing, not an error: the
// decision says whether the volume may be served without it (--allow-degraded). A refusal is the
// decision's own status, message unchanged. Every slot gets one log line with its role and the
// rule that gave it. Nothing is written here: the volume's Open() writes the view (with a new
// generation when the decision asks for one) to every member present before any client comes.
//
// Threading: planning runs before the event loop; building on its thread, before it runs.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/redundant_assembly.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/serve_config.h"
#include "common/status.h"

namespace dst::aggregator {

// A member given to serve whose superblocks could not be read.
struct UnreadMember {
  std::string uri;
  Status why;
};

struct RedundantPlan {
  std::string name;                                               // the volume's
  std::vector<std::optional<integrity::MemberSuperblock>> slots;  // by member index
  std::vector<UnreadMember> unread;
  integrity::redundancy::AssemblyDecision decision;
  uint32_t freshest = 0;       // the current slot the view starts from
  integrity::Superblock view;  // what the volume continues from
};

// Places the members read (`found`, at least one, of a mirror or raid10 volume), runs the
// decision with the volume's --allow-degraded and --discard, logs one line per slot, and builds
// the view. The decision's status when it refuses.
Status PlanRedundantAssembly(const VolumeConfig& v, std::vector<integrity::MemberSuperblock> found,
                             std::vector<UnreadMember> unread, RedundantPlan* plan);

// Members of redundant volumes give up on an I/O after min(retry-window, degrade-after), so that
// a copy that does not answer fails its I/O and is demoted by its set. They require fencing
// unless --fencing was given, and fence under the session of their slot (FenceSession) with the
// plan's ownership epoch as the high half of their epoch.
member::TransactionOptions RedundantMemberOptions(const ServeConfig& config,
                                                  const RedundantPlan& plan, uint32_t slot);

// The fence session of slot `slot` of the volume `volume_uuid`: the first 32 hex digits of the
// BLAKE2b-256 digest of the UUID's 16 bytes and the slot as 4 big-endian bytes. Every aggregator
// that assembles the volume uses the same one, so that the newest owner fences the others.
std::string FenceSession(const integrity::Uuid& volume_uuid, uint32_t slot);

// This aggregator run's owner UUID: random, made once per process.
const integrity::Uuid& RunOwnerUuid();

// Single writer: raises the plan's ownership epoch by one, with `owner` as its owner, and writes
// the view (with each member's identity, at the next event) to every current member, flushed,
// through one-shot connections, before any member is connected for data. The volume continues
// from that view, so later superblock updates keep the new owner. Stale copies keep their own
// superblocks. Refuses (the first member that cannot take the update, or EOVERFLOW at the
// format's largest ownership epoch). `min_epoch`: the least epoch to claim (serve --cluster: the
// revision of the volume's lock, docs/cluster.md "Ownership"), when it is above the raised one.
Status ClaimOwnership(const member::MemberTls& tls, const integrity::Uuid& owner,
                      RedundantPlan* plan, uint64_t min_epoch = 0);

// `targets` by slot: the connected member, nullptr for a missing one. A present slot that is not
// current (stale: a bitmap resync or a full rebuild; discarded: a rebuild) is caught up once the
// volume is open (ChecksummedVolume::CatchUp) when `auto_resync`, and otherwise stays stale.
Status BuildRedundantVolume(asio::io_context& io, const RedundantPlan& plan,
                            std::span<volume::MemberTarget* const> targets,
                            std::span<const uint8_t> key, integrity::ChecksumOptions options,
                            bool auto_resync, std::unique_ptr<integrity::ChecksummedVolume>* out);

}  // namespace dst::aggregator
