// ReturnWatcher: a running `serve` notices that a member of a mirror or raid10 volume that is out
// is reachable again, and brings it back (docs/redundancy.md, "A member comes back").
//
// Every probe interval, for each volume it watches (mirror and raid10 with auto-resync), it reads
// the superblocks of the candidates: the members that could not be read at start, and the
// members of the slots the volume calls returnable (ChecksummedVolume::ReturnableSlots: out,
// not failed, not catching up), and of those only. A member that answers, and whose superblock
// names a slot that is still returnable, gets a new NbdMember with the slot's transaction
// options (a fence epoch above the slot's previous member's), connected, and is handed to
// ChecksummedVolume::ReattachCopy, which decides (resync, rebuild or refusal) and logs
// `volume V: slot S URI is back: ...`. Accepted: the new member replaces the slot's in
// Server::members and Server::member_refs (status, metrics, stats lines), the abandoned one moves
// to Server::retired_members, still alive. Refused (EINVAL, or a member that cannot connect or is
// of another volume): logged once per URI and reason, `volume V: URI cannot come back to slot S:
// REASON` (without the slot when it is not known), dropped, and probed again at the next
// interval. Taken but not caught up (EIO: the volume holds it, the slot is out again): logged
// the same way and kept like an accepted one.
//
// Probes are blocking libnbd reads (integrity::ReadSuperblocks): each round runs on its own
// thread, one thread per candidate, and hands its results back to the event loop with
// asio::post; one round at a time, the next interval counted from the end of the last. A
// member that cannot be reached is not logged above debug.
//
// A volume removed while serving (`volume remove`, aggregator/volume_remove.h) is let go with
// ForgetVolume() before it closes, refused (Busy) while a member is being connected or attached to
// it; VolumeRemoved() then renumbers the volumes after it in Server::volumes.
//
// Lifecycle: AddVolume() before Start(), or after it for a volume added while serving; Stop()
// before the volumes close: no probe starts and no member is attached after it. Stop() waits for
// the round in progress (a connect gives up after integrity::kMetadataConnectTimeout), and keeps
// the members it was connecting or attaching alive in Server::retired_members, since a volume may
// already hold one.
//
// Threading: every call on the event loop's thread (Stop() once the loop has stopped); only the
// probes run elsewhere, and touch nothing but their own results.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "aggregator/control/runtime.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/member/member_tls.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/slot_member.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::aggregator {

class ReturnWatcher {
 public:
  struct Settings {
    std::chrono::milliseconds interval{5000};
    unsigned connections = 2;  // per member, as at start
    member::MemberTls tls;
  };
  // One mirror or raid10 volume as serve assembled it.
  struct WatchedVolume : SlotVolume {
    // By slot: the URI of the member that held it at start; nullopt for a missing slot.
    std::vector<std::optional<std::string>> uris;
    // The URIs whose superblocks could not be read at start (RedundantPlan::unread).
    std::vector<std::string> unread;
  };

  ReturnWatcher(control::Server& server, Settings settings);
  ~ReturnWatcher();
  ReturnWatcher(const ReturnWatcher&) = delete;
  ReturnWatcher& operator=(const ReturnWatcher&) = delete;

  void AddVolume(WatchedVolume volume);
  // Arms the first probe, one interval from now; nothing when there is no volume to watch or
  // the interval is 0.
  void Start();
  void Stop();
  // Slot `slot` of the volume at `volume_index` in Server::volumes has a new member (member add):
  // its URI is the one probed when the slot is out again.
  void SlotMemberChanged(size_t volume_index, uint32_t slot, const std::string& uri);
  // EBUSY while a member of `volume` is being connected or attached to it; else OK.
  Status Busy(const integrity::ChecksummedVolume* volume) const;
  // No more probes or returns for `volume` (once not Busy); a probe round in progress finds it
  // forgotten. Nothing for a volume not watched.
  void ForgetVolume(const integrity::ChecksummedVolume* volume);
  // The volume at `volume_index` in Server::volumes has left it.
  void VolumeRemoved(size_t volume_index);
  // The name of the watched volume that may take `uri` back (a slot's URI or one unread at
  // start), "" for none.
  std::string VolumeWatching(const std::string& uri) const;

 private:
  struct Candidate {
    size_t watched;  // index in volumes_
    std::string uri;
  };
  struct Probe {
    Candidate candidate;
    Status status;  // of the reads
    integrity::MemberReadResult read;
  };
  // A member being connected or attached to a slot.
  struct Pending {
    size_t watched;
    uint32_t slot;
    std::string uri;
    std::unique_ptr<member::NbdMember> member;
  };

  void Arm();
  void StartRound();
  std::vector<Candidate> Candidates() const;
  void FinishRound(std::vector<Probe> probes);
  void Consider(const Probe& probe);
  void Attach(size_t watched, uint32_t slot, const std::string& uri,
              const integrity::Superblock& its);
  void OnConnected(uint64_t id, integrity::Superblock its, Status status);
  void OnReattached(uint64_t id, Status status);
  // The member of `pending` becomes its slot's (InstallSlotMember).
  void Adopt(Pending pending);
  // Destroys a member that is not used later, outside its own callbacks.
  void Drop(std::unique_ptr<member::NbdMember> member);
  // Logs `volume V: URI cannot come back[ to slot S]: REASON` unless it already did for this URI
  // and reason.
  void Refuse(size_t watched, const std::string& uri, std::optional<uint32_t> slot,
              const std::string& reason);
  // ReattachCopy's refusal without the words the log line already has ("slot S of V: URI
  // refused: "), so that it reads as the rule and its reason.
  std::string RuleOf(const Pending& pending, const std::string& refusal) const;
  const std::string& NameOf(size_t watched) const;

  control::Server& server_;
  Settings settings_;
  std::vector<WatchedVolume> volumes_;  // a forgotten one stays, with volume == nullptr
  asio::steady_timer timer_;
  std::thread round_;  // the probes in progress; joinable while a round runs
  bool stopped_ = false;
  bool started_ = false;  // Start() was called
  uint64_t next_pending_ = 1;
  std::map<uint64_t, Pending> pending_;
  std::vector<std::unique_ptr<member::NbdMember>> dropped_;        // destroyed by a posted handler
  std::set<std::pair<std::string, std::string>> refusals_logged_;  // (URI, reason)
  Lifetime lifetime_;                                              // last: expires first
};

}  // namespace dst::aggregator
