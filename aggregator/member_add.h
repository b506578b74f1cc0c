// MemberAdder: `member add VOLUME URI [SLOT]` in a running `serve` (docs/redundancy.md, "Member
// commands"): a new export becomes the member of a slot of a mirror or raid10 volume that is out
// (stale, failed or missing), and is rebuilt in full.
//
// The steps, each refusal answered and nothing written before the format:
//   1. on the loop: the slot (ChecksummedVolume::ReserveSlot: the one named, or the lowest that
//      is out with nothing under way), held until the end: no member comes back to it and no
//      other add takes it meanwhile; one add at a time per URI;
//   2. on a thread: the export's size and superblocks (integrity::ReadSuperblocks). An export
//      that holds a dst superblock is refused (EEXIST), except one of this volume for the very
//      slot being filled (its old member, out): a live copy is never formatted over;
//   3. on the loop: the superblock it gets (ChecksummedVolume::NewMemberSuperblock: a new member
//      UUID, the slot rebuilding; EINVAL when the size is not the slot member's);
//   4. on a thread: integrity::WriteNewMember (zeroed metadata and data, both superblock slots);
//   5. on the loop: a new NbdMember with the slot's transaction options (NewSlotMember: fenced
//      as the slot's other members), connected, handed to ChecksummedVolume::AdoptMember, which
//      records the new owner and starts the rebuild; then it is the slot's member
//      (InstallSlotMember) and the ReturnWatcher probes its URI when the slot is out again.
// The answer comes once the rebuild has started, not when it ends.
//
// `member replace VOLUME SLOT --with URI` (Replace) takes the same steps for a slot whose copy is
// current: the slot is reserved with ChecksummedVolume::ReserveReplacement, an export holding the
// slot's live member is refused like any other live copy, and the new member is handed to
// ChecksummedVolume::AdoptReplacement, which rebuilds it beside the old one. The member is kept
// here until the volume says how the replacement ended: the slot's member then
// (InstallSlotMember, the old one retired), or retired itself.
//
// A volume removed while serving (aggregator/volume_remove.h) is let go with ForgetVolume() before
// it closes, refused while an add or replace of it is under way; VolumeRemoved() then renumbers
// the volumes after it in Server::volumes.
//
// Lifecycle: AddVolume() before the loop runs; Stop() once it has stopped, before the volumes
// close: it waits for the threads at work (a connect gives up after
// integrity::kMetadataConnectTimeout; a format, the zeroing of the export, is waited for), answers
// nothing more, and keeps the members it was connecting or handing over alive in
// Server::retired_members.
//
// Threading: every call on the event loop's thread (Stop() once the loop has stopped); the
// threads touch only their own results.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/control/runtime.h"
#include "aggregator/integrity/checksummed_volume.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/member/member_tls.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member/transaction_policy.h"
#include "aggregator/off_loop.h"
#include "aggregator/slot_member.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::aggregator {

class MemberAdder {
 public:
  struct Settings {
    unsigned connections = 2;  // per member, as at start
    member::MemberTls tls;
  };
  // A mirror or raid10 volume as serve assembled it.
  using AddableVolume = SlotVolume;
  using Done = std::function<void(Status, uint32_t slot)>;

  MemberAdder(control::Server& server, Settings settings);
  ~MemberAdder();
  MemberAdder(const MemberAdder&) = delete;
  MemberAdder& operator=(const MemberAdder&) = delete;

  void AddVolume(AddableVolume volume);
  // `done` hears the slot and OK once the rebuild has started, or the refusal (the volume's own
  // for a linear volume, a slot that cannot be filled, and the ones above).
  void Add(integrity::ChecksummedVolume& volume, const std::string& uri,
           std::optional<uint32_t> slot, Done done);
  // `done` hears OK once the rebuild beside slot `slot`'s member has started, or the refusal.
  void Replace(integrity::ChecksummedVolume& volume, uint32_t slot, const std::string& uri,
               Done done);
  void Stop();
  // No more adds to `volume` (not addable: OK, nothing to do); EBUSY while an add or a replace of
  // one of its members is under way.
  Status ForgetVolume(const integrity::ChecksummedVolume* volume);
  // The volume at `volume_index` in Server::volumes has left it.
  void VolumeRemoved(size_t volume_index);

 private:
  struct Job {
    size_t added = 0;  // index in volumes_
    uint32_t slot = 0;
    std::string uri;
    Done done;
    integrity::Superblock superblock;  // what the export is formatted with
    std::unique_ptr<member::NbdMember> member;
    bool handed = false;   // to AdoptMember, which ends the slot's reservation
    bool replace = false;  // member replace: the slot's member stays until the new one is done
  };
  void Start(integrity::ChecksummedVolume& volume, const std::string& uri,
             std::optional<uint32_t> slot, bool replace, Done done);
  // The volume said how a replacement ended (AdoptReplacement's `ended`).
  void OnReplaced(uint64_t id, const Status& status, bool installed);
  // The member of a job handed to the volume, kept alive as long as the volume.
  void Retire(std::unique_ptr<member::NbdMember> member);

  void OnRead(uint64_t id, Status status, const integrity::MemberReadResult& read);
  void OnFormatted(uint64_t id, Status status);
  void OnConnected(uint64_t id, Status status);
  void OnAdopted(uint64_t id, Status status);
  // Answers the job and forgets it; its member, if any, is dropped outside its own callbacks.
  void Finish(uint64_t id, Status status);
  // Why `uri` may not be formatted as the new member of slot `slot` of `volume` (Ok: it may).
  static Status CheckExisting(const integrity::ChecksummedVolume& volume, uint32_t slot,
                              bool replace, const std::string& uri,
                              const integrity::MemberReadResult& read);

  control::Server& server_;
  Settings settings_;
  std::vector<AddableVolume> volumes_;  // a forgotten one stays, with volume == nullptr
  bool stopped_ = false;
  uint64_t next_job_ = 1;
  std::map<uint64_t, Job> jobs_;
  std::map<uint64_t, Job> replacing_;  // answered; the volume is rebuilding their member
  OffLoopWork work_;                   // reads, formats and plans off the loop
  std::vector<std::unique_ptr<member::NbdMember>> dropped_;  // destroyed by a posted handler
  Lifetime lifetime_;                                        // last: expires first
};

}  // namespace dst::aggregator
