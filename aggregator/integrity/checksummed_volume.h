// ChecksummedVolume: a volume assembled from members formatted with member
// format v1 (docs/format.md), serving clients with end-to-end checksums
// (docs/integrity.md). It wraps a plain Volume built over the members' data
// areas and adds, per request:
//   - a range lock on the blocks it touches (reads shared, the rest exclusive);
//   - the checksum table entries of those blocks (TableCache);
//   - for anything that changes data, the write-intent bits of the regions it
//     touches, durable before the first member write (WriteIntent).
// Reads verify every block against its entry and read a mismatching block
// once more before failing with EIO; blocks whose entry is zero read as zeros
// without a member read and are reported as holes. A write covering part of a
// block is a read-modify-write of that block. TRIM and WRITE_ZEROES set
// entries to zero and zero the members' blocks (so that a crash before the
// table reaches the members cannot bring old data back).
//
// Mirror and raid10 volumes (CreateRedundant, docs/redundancy.md): each set
// of copies stands where a member stands (a volume::MirrorSet over the
// copies: the table cache, the bitmap, the data areas and the inner Volume
// address sets), while superblocks are written to each copy with its own
// identity. The volume is the sets' SetHealth: it demotes a failing copy
// durably in the superblocks of the others. A block that fails verification
// is read from every current copy of its set; if one verifies, the client
// gets it and the copies that did not are rewritten with it (self-heal).
//
// Lifecycle: Create() checks the superblocks; Open() loads the bitmaps, marks
// the volume dirty on every member and recomputes the checksums of regions
// left dirty by an unclean stop; then requests may come; Close() stops the
// background jobs (checkpointed), waits for the requests, writes everything
// back, clears the bitmap and marks the volume clean.
// A cleaner writes dirty table pages back every `clean_interval` and clears
// the bits of regions that stayed quiet meanwhile.
//
// The work is split by job: the request path is checksummed_requests.cc; the
// lifecycle (assembly, superblock updates, clean stop) checksummed_volume.cc;
// for copies, their superblock updates, demotion and supersede
// checksummed_copies.cc and self-heal checksummed_self_heal.cc; crash
// recovery recompute.h and the cleaner cleaner.h, both of which work only on
// what the volume hands them (table cache, bitmap, data areas).
//
// Threading: the event-loop thread only. With ChecksumOptions::workers, the
// checksums and ciphers of large reads and writes are computed on the pool's
// threads, each with its own Checksummer and BlockCipher (WorkerCrypto) and
// touching only the request's buffers; everything else (table, counters,
// locks, member I/O) stays on the loop, where the pool posts the end back.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/integrity/background_jobs.h"
#include "aggregator/integrity/cleaner.h"
#include "aggregator/integrity/data_area_member.h"
#include "aggregator/integrity/integrity_counters.h"
#include "aggregator/integrity/resync_job.h"
#include "aggregator/integrity/scrub_job.h"
#include "aggregator/integrity/superblock.h"
#include "aggregator/integrity/table_cache.h"
#include "aggregator/integrity/write_intent.h"
#include "aggregator/volume/mirror_set.h"
#include "aggregator/volume/range_lock.h"
#include "aggregator/volume/volume.h"
#include "common/block_cipher.h"
#include "common/checksum.h"
#include "common/lifetime.h"
#include "common/worker_pool.h"

namespace dst::integrity {

using volume::RangeLock;

// "slot 3": how messages name a slot (member index) of a mirror or raid10 volume.
std::string SlotName(uint32_t slot);

// Requests of at least this many bytes have their checksums and ciphers computed on the
// workers; smaller ones on the loop, where they cost less than the hand-over to the workers and
// back (10 to 40 us). BLAKE2b (plain, keyed, or an encrypted volume's MAC after AES-XTS) costs 6
// to 9 us per 4 KiB, so 64 KiB. CRC32C costs 0.3 us, 80 us a MiB, no more than moving the data
// to another core's cache: 1 MiB requests were slower on the workers, so only larger ones go
// (docs/benchmarks.md, "Hashing and ciphers on a worker pool").
inline constexpr uint64_t kWorkerMinBytes = uint64_t{64} << 10;
inline constexpr uint64_t kWorkerMinBytesCrc32c = uint64_t{2} << 20;
uint64_t WorkerMinBytes(ChecksumAlgorithm algorithm);

struct ChecksumOptions {
  uint64_t table_cache_bytes = uint64_t{64} << 20;
  // The checksums (and ciphers) of a read or write of at least WorkerMinBytes() are computed on
  // these threads, the rest on the event loop; nullptr: everything on the loop. Scrub, resync,
  // self-heal and recovery stay on the loop. The pool outlives the volume.
  WorkerPool* workers = nullptr;
  std::chrono::milliseconds clean_interval{5000};
  std::string description;
  // Resync, rebuild and scrub: rates, checkpoint and progress intervals.
  BackgroundJobs::Options background;
  // Volumes with table tags: the directory of the files that anchor the table pages' generations
  // (table_anchor.h; `serve --state-dir`). Empty: anchored in memory only, for as long as the
  // aggregator runs.
  std::string state_dir;
};

// One slot (member) of a mirror or raid10 volume as assembly decided it.
struct RedundantSlot {
  volume::MemberTarget* target = nullptr;  // nullptr when the member is missing
  std::optional<Superblock> superblock;    // what the member holds; nullopt when missing
  volume::CopyRole role = volume::CopyRole::kOut;
};

class ChecksummedVolume final : public volume::BlockDevice,
                                private volume::SetHealth,
                                private ScrubTarget {
 public:
  // `members` and `superblocks` are in member-index order, as OrderMembers
  // returns them; `key` is the checksum key (empty unless keyed), or the
  // master key of an encrypted volume (docs/encryption.md). Members must
  // outlive the volume. EINVAL when the superblocks describe a volume these
  // members cannot hold, or for a master key that is not the volume's.
  static Status Create(asio::io_context& io, std::vector<volume::MemberTarget*> members,
                       std::vector<Superblock> superblocks, std::span<const uint8_t> key,
                       ChecksumOptions options, std::unique_ptr<ChecksummedVolume>* out);
  // Mirror and raid10 (format version 2): `slots` in member-index order, one
  // per slot of the volume. `view` is the superblock the volume continues
  // from: the freshest current member's, with the slot states and the
  // generation that assembly decided; Open() writes it (with each member's own
  // identity and size) to every member present. The volume builds one
  // volume::MirrorSet per set and serves through them (docs/redundancy.md).
  static Status CreateRedundant(asio::io_context& io, std::vector<RedundantSlot> slots,
                                Superblock view, std::span<const uint8_t> key,
                                ChecksumOptions options, std::unique_ptr<ChecksummedVolume>* out);
  ~ChecksummedVolume() override;

  // Mirror and raid10, before Open(): copy `slot` (present, out) is brought
  // back once the volume is open (docs/redundancy.md, "Resync and rebuild"):
  // Open() makes it a catching-up copy, records it resyncing or rebuilding
  // (from the cursor the superblocks hold, when they already say so) and
  // adds a ResyncJob. `full`: a rebuild of every written block; otherwise
  // the regions of the set's missed-write maps (and of the copy's own intent
  // bits). `reason` is what status shows for it.
  void CatchUp(uint32_t slot, bool full, std::string reason);

  void Open(Done done);
  void Close(Done done);
  // What a Close() that has not finished still waits for, for the log line of a stop that
  // timed out: "closing: 2 requests in flight, 1 background job, a cleaner pass, ...".
  std::string CloseProgress() const;

  // Encrypted volumes (docs/encryption.md; checksummed_keys.cc). Whether the volume is, its
  // master key (to seal another key slot with, off the loop: scrypt takes a second; empty once
  // the volume is closed, which wipes its cipher's keys) and its key slots as the superblocks
  // hold them.
  bool encrypted() const { return view_.encrypted(); }
  // Keyed or encrypted: table entries are MACs, which only the key holder computes. A FLUSH (and
  // a FUA write) then makes the entries durable too, and recovery never recomputes an entry from
  // what a member holds (recompute.h).
  bool authenticated() const {
    return view_.geometry.params.algorithm == ChecksumAlgorithm::kBlake2bKeyed;
  }
  std::span<const uint8_t> master_key() const;
  const std::array<KeySlotBytes, kKeySlots>& key_slots() const { return view_.key_slots; }
  // Key slot `index` becomes `bytes` (all zero: empty) in every member's superblock; `done` hears
  // 0 once that is durable, EBUSY while another key slot change is under way, EINVAL for a volume
  // that is not encrypted or for emptying its last slot in use.
  void SetKeySlot(uint32_t index, const KeySlotBytes& bytes, Done done);

  // Mirror and raid10: copy `slot` was fenced out by a newer owner (another
  // aggregator assembled the volume and joined its members' fence sessions
  // with a higher ownership epoch). From then on no copy is demoted and no
  // superblock is written (their waiters get EROFS): the copies did not fail,
  // this aggregator lost the volume. Logs once `volume V: fenced by a newer
  // owner (ownership epoch N): no more writes`, N read from that copy's
  // superblock ("N or later" when it cannot be read). From then on clients'
  // writes, trims, zeroes and flushes fail with EROFS, their reads, cache and
  // block status with ESHUTDOWN (the table cache is not the new owner's).
  void Supersede(uint32_t slot);
  bool superseded() const { return superseded_; }
  // This aggregator lost the volume's cluster lock (docs/cluster.md, "Ownership"): as Supersede,
  // but at once, before a newer owner can have fenced it, and for any layout. Logs `volume V:
  // WHY: no more writes` once.
  void StopWrites(const std::string& why);

  const std::string& name() const override { return inner_->name(); }
  const std::string& description() const override { return inner_->description(); }
  uint64_t size() const override { return inner_->size(); }
  const volume::VolumeCapabilities& capabilities() const override { return caps_; }
  // Member `member`'s superblock as last written (for a missing copy of a
  // redundant volume: the volume's view).
  const Superblock& superblock(size_t member) const { return superblocks_[member]; }
  const IntegrityCounters& counters() const { return counters_; }
  // The volume's background work (resync, rebuild, scrub): it hears of every
  // client request (the throttle), and Close() shuts it down, checkpointed,
  // before the clean stop.
  BackgroundJobs& jobs() { return jobs_; }
  const BackgroundJobs& jobs() const { return jobs_; }
  uint64_t dirty_regions() const { return intent_.set_count(); }
  // checksum_errors of the blocks that live on member `index` (for copies: of
  // the blocks whose data on that copy failed verification).
  uint64_t member_checksum_errors(size_t index) const { return member_checksum_errors_[index]; }
  uint64_t table_pages() const { return table_.cached_pages(); }
  uint64_t table_dirty_pages() const { return table_.dirty_pages(); }
  // Table tags: member flushes that ordered tag pages before their table pages.
  uint64_t table_ordering_flushes() const { return table_.counters().ordering_flushes; }
  // Every number of the volume, in the order and with the names that the
  // stats line, `status` and the metrics endpoint use.
  std::vector<NamedCounter> Counters() const;
  // "state=dirty checksum_errors=0 ...": the superblocks' state, then
  // Counters(); for stats lines.
  std::string StatsLine() const;
  // The superblocks' state and Counters(), for status, metrics and stats lines.
  volume::DeviceState State() const override;
  // jobs() as status shows it.
  std::vector<volume::JobState> JobStates() const;

  // Scrub (checksummed_scrub.cc; docs/redundancy.md, "Scrub"): reads every written block on
  // every current copy and verifies it; repair mode rewrites a bad copy from one that verifies.
  // Each call acts at once; the scrub's record reaches the superblocks of a mirror or raid10
  // volume right after (linear and stripe volumes keep it in memory only).
  // StartScrub: no mode: repair when the volume has copies, check otherwise. EBUSY while a scrub
  // is under way, EINVAL for repair without copies, ESHUTDOWN when not open, EROFS superseded.
  Status StartScrub(std::optional<ScrubMode> mode);
  // ENOENT when no scrub is under way.
  Status PauseScrub();
  Status ResumeScrub();
  Status StopScrub();
  const ScrubRecord& scrub() const { return scrub_; }
  // The background jobs' rates, effective at once; EINVAL unless 0 < min <= max.
  Status SetRateLimits(RateLimits limits);

  // The operator's member commands (checksummed_members.cc; docs/redundancy.md, "Member
  // commands"). Each checks, acts at once on the running volume and answers; the change reaches
  // the superblocks of the current copies in the next update, whose result `durable` hears.
  // Refusals (the message is what the operator reads): EINVAL for a linear or stripe volume or
  // a slot in the wrong state, ERANGE for a slot past the member count, EBUSY for the last
  // current copy of its set, ESHUTDOWN when not open, EROFS once superseded.
  // FailMember: a current copy is dropped (its connections closed, its I/O failed) and recorded
  // `failed` like a demotion; assembly does not resync a failed slot at the next start.
  Status FailMember(uint32_t slot, Done durable = nullptr);
  // Sets or clears kSlotWriteMostly: the set's read choice follows at once.
  Status SetWriteMostly(uint32_t slot, bool write_mostly, Done durable = nullptr);
  // A slot that is out (stale, failed or missing; not catching up) becomes `missing` with a new
  // owner UUID no member holds, so its old export is refused for the slot (rule not-owner), and
  // its connections are closed.
  Status RemoveMember(uint32_t slot, Done durable = nullptr);

  // A member that comes back while the volume serves (checksummed_return.cc; docs/redundancy.md,
  // "A member comes back"). ReturnableSlots: the slots that may take their member back: out
  // (stale or missing, not failed), with no catch-up under way; empty for linear and stripe
  // volumes and once closing or superseded.
  std::vector<uint32_t> ReturnableSlots() const;
  // `target` is connected and holds slot `slot` again; `its` is the superblock it holds, read
  // just now. Decided as assembly decides a stale member (its owner UUID, generation and the
  // view's history): a resync of the regions of the set's missed-write maps and of its own
  // intent bits, or a full rebuild when the maps no longer cover what it missed; the target
  // becomes the slot's copy, catching up, and a ResyncJob runs as for CatchUp at Open. The
  // previous target of the slot (an abandoned member) is no longer used, but the caller keeps it
  // alive. `done` hears OK once the job is added; EINVAL with the rule's reason when the member
  // is refused (the target is not used and may be dropped); EBUSY when the slot is not
  // returnable any more; ERANGE/ESHUTDOWN/EROFS as for the member commands.
  //
  // The checks come first and change nothing when they refuse: the target gets no I/O and may be
  // dropped (EINVAL, EBUSY, ERANGE, ESHUTDOWN, EROFS). Once they pass, the target is the slot's
  // copy until another replaces it, and the caller keeps it alive as long as the volume (as it
  // does the previous one): the volume logs `volume V: slot S URI is back: REASON`, reads its
  // intent bits, records the slot resyncing or rebuilding and adds the job. When that fails
  // (the superblock update fails, the volume starts stopping), `done` hears EIO naming the cause
  // and the slot is out again, returnable, with this target.
  void ReattachCopy(uint32_t slot, volume::MemberTarget* target, const Superblock& its,
                    std::function<void(Status)> done);

  // A new member for a slot that is out (`member add`; checksummed_add.cc; docs/redundancy.md,
  // "Member commands"). The caller formats the new export (WriteNewMember, off the event loop)
  // with NewMemberSuperblock's superblock, connects it, then hands it to AdoptMember.
  // SlotToFill: `slot` when it may take a new member, else (nullopt) the lowest slot that is out
  // (stale, failed or missing) with nothing under way. EBUSY when there is none (`volume V has
  // no slot to fill: every slot is current or catching up`) or the slot named cannot take one;
  // EINVAL, ERANGE, ESHUTDOWN, EROFS as for the member commands.
  Status SlotToFill(std::optional<uint32_t> slot, uint32_t* out) const;
  // ReserveSlot: SlotToFill, and the slot is held for the caller's new member until AdoptMember
  // or ReleaseSlot: meanwhile no member comes back to it (ReturnableSlots leaves it out) and no
  // other member add takes it (`... cannot take a new member: a new member is being added to it
  // (member add)`), while the caller reads and formats the export.
  Status ReserveSlot(std::optional<uint32_t> slot, uint32_t* out);
  void ReleaseSlot(uint32_t slot);
  // The superblock the new member of `slot` is formatted with: the view as that slot's copy, with
  // a new member UUID as the member's identity and as the slot's owner, the slot recorded
  // rebuilding. EINVAL naming `uri` when `export_size` is not the size of the slot's member.
  Status NewMemberSuperblock(uint32_t slot, const std::string& uri, uint64_t export_size,
                             Superblock* out) const;
  // `target` (connected, formatted with `its` from NewMemberSuperblock) becomes the copy of slot
  // `slot` (a reservation of the slot ends here, whatever the answer): the next superblock update
  // makes its member UUID the slot's owner and records the slot rebuilding; once that is durable a
  // full rebuild starts (`rebuilding (full: new member (member add))`) and `done` hears OK.
  // Refusals change nothing (the target gets no I/O and may be dropped): EBUSY when the slot cannot
  // take a new member any more, EINVAL when `its` is not a new member of this slot (or the target
  // cannot be a copy of its set), ERANGE, ESHUTDOWN, EROFS as for the member commands. Once
  // accepted, the target is the slot's copy and the caller keeps it alive as long as the volume
  // (and the slot's previous target, abandoned); when the update or the start of the rebuild fails,
  // `done` hears EIO and the slot is out again, with this target.
  void AdoptMember(uint32_t slot, volume::MemberTarget* target, const Superblock& its,
                   std::function<void(Status)> done);

  // A new member rebuilt beside a current copy, which keeps serving until the new one is complete
  // (`member replace`; checksummed_replace.cc; docs/redundancy.md, "Replace a member"). One
  // replacement at a time per volume. The caller reserves the slot, formats the new export with
  // NewMemberSuperblock's superblock, connects it and hands it to AdoptReplacement.
  // ReserveReplacement: EINVAL when the slot's copy is not current (`slot S of V is STATE: nothing
  // serves from it to keep; use member add`), EBUSY while a replacement is under way (`volume V: a
  // replacement is under way (slot S)`), and the member commands' refusals. The reservation holds
  // off member add and returns to the slot until AdoptReplacement or ReleaseReplacement.
  Status ReserveReplacement(uint32_t slot);
  void ReleaseReplacement(uint32_t slot);
  // `target` (connected, formatted with `its`) becomes the set's replacement copy: written by every
  // client write, read by no client, rebuilt in full (job `replacing V slot S`). `started` hears OK
  // once the rebuild runs, or why not (refusals as for AdoptMember; nothing was written when it
  // says so before the target was taken). Once the target is taken, `ended` is called exactly once,
  // from the event loop: `installed` true when the target is now the slot's member (the rebuild
  // finished; the new owner is durable unless the status says otherwise), false when the
  // replacement ended without it (the new member failed, the volume stopped); either way the
  // caller keeps the target alive as long as the volume. The old member is abandoned at the end.
  void AdoptReplacement(uint32_t slot, volume::MemberTarget* target, const Superblock& its,
                        std::function<void(Status)> started,
                        std::function<void(Status, bool installed)> ended);
  // The name (URI) of slot `slot`'s member, "(missing)" without one, "" for no such slot; for the
  // operator's messages.
  std::string SlotMemberName(uint32_t slot) const;

  void Read(uint64_t offset, uint64_t length, uint8_t* buf, ReadDone done) override;
  void Write(uint64_t offset, uint64_t length, const uint8_t* buf, bool fua, Done done) override;
  void Flush(Done done) override;
  void Trim(uint64_t offset, uint64_t length, bool fua, Done done) override;
  void Zero(uint64_t offset, uint64_t length, bool may_trim, bool fast_only, bool fua,
            Done done) override;
  void Cache(uint64_t offset, uint64_t length, Done done) override;
  void BlockStatus(uint64_t offset, uint64_t length, ExtentsDone done) override;

 private:
  struct BlockRef {
    uint32_t member;  // the target: a member, or a set of copies
    uint64_t block;   // data block of the target
  };
  struct Op;
  struct CopyRead;
  struct ReadOp;
  struct WriteOp;
  // What Create and CreateRedundant hand the constructor.
  struct Assembly {
    std::vector<volume::MemberTarget*> members;        // linear/stripe: the members
    std::vector<std::vector<volume::CopySetup>> sets;  // mirror/raid10: the copies of each set
    std::vector<MemberGeometry> geometries;            // per target (member or set)
    std::vector<Superblock> superblocks;               // per member (copy)
    Superblock view;                                   // what the volume continues from
  };
  // A superblock update of a redundant volume and who waits for it.
  struct PendingDemotion {
    uint32_t slot;
    std::string cause;
    std::function<void(int err)> durable;
    MemberState state = MemberState::kStale;  // kFailed: failed by the operator
  };
  // A change of one slot's state (and cursor, in blocks of the data area);
  // a slot becoming active starts a new generation.
  struct SlotChange {
    uint32_t slot;
    MemberState state;
    uint64_t cursor;
  };
  // The operator's changes of a slot's flags or owner (checksummed_members.cc).
  struct SlotEdit {
    uint32_t slot;
    std::optional<uint8_t> flags;  // the slot's new flags
    bool remove = false;           // missing, with an owner UUID no member holds
    std::optional<Uuid> owner;     // a new member owns the slot: rebuilding from the start
  };
  struct PendingUpdate {
    std::optional<VolumeState> state;
    Done done;
    std::optional<SlotChange> slot_change;
    std::optional<std::pair<uint32_t, KeySlotBytes>> key_slot;  // key slot index, its new bytes
    bool map_epoch = false;  // the missed-write maps are all clear as of this update
    std::optional<SlotEdit> slot_edit;
  };
  // A replacement under way (checksummed_replace.cc).
  struct Replacement {
    enum class Phase : uint8_t {
      kReserved,    // the caller is formatting the new export
      kRebuilding,  // the new member is the set's replacement copy, catching up
      kFinishing,   // the slot's copy has the new member; the update naming it is on its way
    };
    uint32_t slot = 0;
    Phase phase = Phase::kReserved;
    volume::MemberTarget* target = nullptr;  // the new member
    Superblock superblock;                   // what it holds
    std::string old_name;                    // the member it replaces
    std::function<void(Status, bool installed)> ended;
    // Finishing: the old member (now the replacement copy, still counted) failed a write; its
    // demotion is durable once the update naming the new owner is.
    std::vector<std::function<void(int err)>> old_demotions;
  };
  struct PendingCatchUp {
    uint32_t slot;
    bool full;
    std::string reason;
  };
  friend class ResyncJob;
  // What the workers compute with: neither a Checksummer nor a BlockCipher is thread-safe, so
  // each worker index has its own pair (the same algorithm and keys as the volume's), used by
  // that worker alone. Shared with the tasks in flight; the keys are wiped when the last holder
  // lets go (at Close(), since Close() waits for the requests).
  struct WorkerCrypto {
    struct PerWorker {
      Checksummer checksummer;
      std::unique_ptr<BlockCipher> cipher;  // encrypted volumes
    };
    std::vector<PerWorker> workers;  // by worker index
    Uuid volume_uuid;
    uint32_t block_size;

    // As ChecksumOf does it, with worker `worker`'s checksummer.
    Digest ChecksumOf(size_t worker, uint64_t volume_block, const uint8_t* data);
  };

  ChecksummedVolume(asio::io_context& io, Assembly assembly, Checksummer checksummer,
                    ChecksumOptions options);
  // The volume's WorkerCrypto when options_.workers is set: one pair per worker, made from `key`
  // as Create makes the volume's own.
  // Table tags (docs/format.md §9): the table cache verifies and tags pages with `key`'s tag key.
  Status AuthenticateTable(std::span<const uint8_t> key);
  // Flushes the members, then anchors the table generations written back before it.
  void FlushMembers(Done done);
  Status MakeWorkerCrypto(std::span<const uint8_t> key);
  // Builds sets_ from the assembly's copies (a redundant volume) and returns
  // the targets the layers above address.
  std::vector<volume::MemberTarget*> MakeTargets(Assembly& assembly);
  // Checks shared by Create and CreateRedundant once the volume exists.
  static Status Finish(std::unique_ptr<ChecksummedVolume> volume,
                       std::unique_ptr<ChecksummedVolume>* out);

  // Lifecycle (checksummed_volume.cc).
  void WriteSuperblocks(VolumeState state, Done done);
  // Linear and stripe: the same, with `edit` applied to every member's superblock.
  void WriteSuperblocks(VolumeState state, std::function<void(Superblock&)> edit, Done done);
  // Redundant volumes (checksummed_copies.cc): superblock updates, one at a time, each taking every
  // state change and demotion queued since the last.
  void QueueUpdate(std::optional<VolumeState> state, Done done);
  void QueueUpdate(PendingUpdate update);
  void QueueSlotChange(uint32_t slot, MemberState state, uint64_t cursor, Done done);
  void QueueMapEpoch(Done done);
  void StartUpdate();
  // The view with a new generation, the current one first in the history.
  static void NewGeneration(Superblock& view);
  // Open()'s last part: every CatchUp() asked for (checksummed_catch_up.cc).
  void StartCatchUps(Done done);
  void StartCatchUp(const PendingCatchUp& catch_up, Done done);
  // `own`: the regions whose intent bit the copy itself holds.
  void PlanCatchUp(const PendingCatchUp& catch_up, std::vector<uint64_t> own, Done done);
  void AddResyncJob(ResyncPlan plan, Done done);
  // Before an update that demotes copies: the missed-write pages of the
  // demoted copies' sets (DemoteSlot marked them) written and flushed to each
  // remaining copy of those sets alone, so that they are durable before the
  // superblocks say the copy is stale. A copy that fails them is left out of
  // the update, as if its superblock write had failed.
  void WriteMissedPages(const std::vector<PendingDemotion>& demotions,
                        std::function<void(std::vector<std::pair<uint32_t, int>> failed)> done);
  void WriteUpdate(Superblock view, std::vector<PendingDemotion> demotions,
                   std::vector<PendingUpdate> updates,
                   std::vector<std::pair<uint32_t, int>> failed_before);
  void FinishUpdate(const Superblock& view, std::vector<uint32_t> written,
                    std::vector<std::pair<uint32_t, int>> failed,
                    std::vector<PendingDemotion> demotions, std::vector<PendingUpdate> updates);
  // The superblock copy `slot` gets: the view with the slot's identity.
  Superblock CopySuperblock(const Superblock& view, uint32_t slot) const;
  // SetHealth.
  void Demote(uint32_t set, uint32_t copy, std::string cause,
              std::function<void(int err)> durable) override;
  // `state`: kStale for a copy that failed I/O, kFailed for one the operator failed.
  void DemoteSlot(uint32_t slot, std::string cause, std::function<void(int err)> durable,
                  MemberState state = MemberState::kStale);
  // FailMember and the others: the slot named exists in a redundant volume that may change.
  Status CheckMemberCommand(uint32_t slot) const;
  // A member coming back (checksummed_return.cc). Why slot `slot` cannot take a member back now
  // (empty: it can).
  std::string NotReturnable(uint32_t slot) const;
  // What keeps any member, returning or new, from slot `slot` now, whatever its state: a copy
  // that is not out, another member on its way, a demotion not durable, a catch-up still
  // ending (empty: none).
  std::string SlotBusy(uint32_t slot) const;
  // What a copy of slot `slot` must share with the other copies of its set: this volume, the
  // slot, the key, the areas and its formatted size. `who` starts the refusal.
  Status CheckCopyOf(uint32_t slot, const volume::MemberTarget& target, const Superblock& its,
                     const std::string& who) const;
  // `target` (holding `its`) becomes slot `slot`'s copy, out until its catch-up starts.
  Status InstallCopy(uint32_t slot, volume::MemberTarget* target, const Superblock& its);
  // The answer of a return or an add once its catch-up started (or could not): OK, or EIO
  // saying that the member `what` but stays out.
  std::function<void(int err)> CatchUpAnswer(uint32_t slot, std::string what,
                                             std::function<void(Status)> done);
  // Whether `its` (held by `target`) may be slot `slot` again, and how it catches up: as
  // assembly decides a stale member, the view standing for the freshest superblock. EINVAL with
  // the reason when it may not.
  Status DecideReturn(uint32_t slot, const volume::MemberTarget& target, const Superblock& its,
                      PendingCatchUp* catch_up) const;
  // A new member (checksummed_add.cc). Why slot `slot` cannot take a new member now (empty: it
  // can).
  std::string NotFillable(uint32_t slot) const;
  // Whether `its` (held by `target`) is a new member of slot `slot`, formatted from the view.
  Status CheckNewMember(uint32_t slot, const volume::MemberTarget& target,
                        const Superblock& its) const;
  static void ApplySlotEdit(const SlotEdit& edit, Superblock& view);
  // The slot's flags as the queued updates leave them.
  uint8_t PendingFlags(uint32_t slot) const;
  // A replacement (checksummed_replace.cc). What keeps slot `slot` from another member while it
  // is being replaced (empty: nothing).
  std::string Replacing(uint32_t slot) const;
  // The replacement copy of set `set` failed an I/O (SetHealth::Demote of copy K).
  void ReplacementCopyFailed(std::string cause, std::function<void(int err)> durable);
  // While rebuilding: the replacement ends without its target, which is abandoned.
  void ReplacementFailed(const std::string& cause);
  // The replace job (holding `target`) was dropped without completing.
  void ReplacementJobGone(const volume::MemberTarget* target);
  // The replace job finished copying (the target flushed): the slot's copy takes the new member
  // and one superblock update makes it the slot's owner, current.
  void FinishReplacement(Done done);
  void EndFinishing(volume::MemberTarget* old, int err);
  // The current copies of set `set` that have a target, ascending.
  std::vector<uint32_t> CurrentCopies(uint32_t set) const;
  // Writes to sets with a demotion that could not be made durable wait for a
  // new superblock update: 0 once it is durable, EIO while it is not (the
  // superblocks may still call the demoted copy current, so nothing may be
  // written to its set without it).
  void AwaitDurableDemotions(const std::vector<BlockRef>& refs, Done done);
  // Whether `slot` is the last current copy of its set.
  bool LastCurrent(uint32_t slot) const;
  bool redundant() const { return !sets_.empty(); }
  uint32_t copies_per_set() const { return redundant() ? view_.copies : 1; }
  const Superblock& view() const { return view_; }
  void RecoverDirtyRegions(Done done);
  void LogSuperseded(const std::vector<std::vector<uint8_t>>& slots);
  void StopClean(Done done);

  // The request path (checksummed_requests.cc).
  // Sets op.first and op.count to the blocks that [offset, offset+length) touches.
  void CoverBlocks(Op& op, uint64_t offset, uint64_t length) const;
  // "volume offset O (member I URI, data offset D)": for log lines.
  std::string BlockPlace(uint64_t volume_block, const BlockRef& ref) const;
  // Blocks [first, first + count) of the volume, in order.
  std::vector<BlockRef> MapBlocks(uint64_t first, uint64_t count) const;
  std::vector<PageKey> PagesOf(const std::vector<BlockRef>& refs) const;
  std::vector<RegionRef> RegionsOf(const std::vector<BlockRef>& refs) const;
  bool EntryIsZero(const BlockRef& ref);
  static bool IsZeroEntry(std::span<const uint8_t> entry);
  bool Verify(uint64_t volume_block, const BlockRef& ref, const uint8_t* data);
  bool Verify(uint64_t volume_block, std::span<const uint8_t> entry, const uint8_t* data);
  Digest ChecksumOf(uint64_t volume_block, const uint8_t* data);
  void FlushWithEntries(Done done);
  void ZeroEntriesFirst(const std::shared_ptr<Op>& op, bool may_trim, bool fua, Done done);
  void FinishFuaWrite(const std::shared_ptr<WriteOp>& op);
  // Encrypted volumes: the blocks from `first_block` in place, but those `skip` marks (holes).
  void Decrypt(uint64_t first_block, uint8_t* data, const std::vector<bool>& skip);
  void DecryptBlock(uint64_t volume_block, uint8_t* data);  // in place
  // `count` blocks from `first_block`, `in` to `out` (which may be the same bytes).
  void Encrypt(uint64_t first_block, uint64_t count, const uint8_t* in, uint8_t* out);

  // What a request does to the volume, for Admit's refusals.
  enum class Access : uint8_t { kRead, kChange };
  // Counts the request in, or fails it (ESHUTDOWN when the volume is not
  // open; superseded: EROFS for changes, ESHUTDOWN for reads).
  bool Admit(const std::function<void(int)>& fail, Access access);
  void Leave();
  // The end of work the volume started itself (a repair, a table page write after a read): it
  // holds Close() like a request, but is no client request for the throttle.
  void LeaveInternal();
  // Common steps of every request: lock, pin, (for changes) mark regions.
  void Begin(const std::shared_ptr<Op>& op, bool exclusive, Callback<void(int)> next);
  void End(const std::shared_ptr<Op>& op);

  void ReadData(const std::shared_ptr<ReadOp>& op);
  void VerifyRead(const std::shared_ptr<ReadOp>& op);
  // Whether the checksums and ciphers of a request of `blocks` blocks go to the workers.
  bool OnWorkers(uint64_t blocks) const;
  // The blocks that failed verification (of those written), given their digests.
  std::vector<size_t> Mismatches(const std::shared_ptr<ReadOp>& op,
                                 const std::vector<Digest>& digests) const;
  // Verified: the blocks that did not verify are read again, the others are done.
  void Verified(const std::shared_ptr<ReadOp>& op, std::vector<size_t> bad);
  void Reread(const std::shared_ptr<ReadOp>& op, std::vector<size_t> bad);
  // Reads one block into `dest` and verifies it, reading it once more if it
  // fails (at once, when `failed_before`); EIO, counted and logged, when the
  // last read fails too. `keep` holds the request's buffers alive.
  void ReadVerified(uint64_t block, const BlockRef& ref, uint8_t* dest, bool failed_before,
                    std::shared_ptr<Op> keep, Done done);
  void FinishRead(const std::shared_ptr<ReadOp>& op, int err);
  // FinishRead's end, the blocks decrypted: copies out, reports holes, answers.
  void DeliverRead(const std::shared_ptr<ReadOp>& op, int err);
  // Redundant volumes (checksummed_self_heal.cc): reads a block that failed
  // verification from every current copy of its set, serves a copy that
  // verifies and repairs the others; EIO naming every copy when none verifies.
  void ReadFromCopies(uint64_t block, const BlockRef& ref, uint8_t* dest, std::shared_ptr<Op> keep,
                      Done done);
  // No copy's data verifies against the cached entry: the entry may be the
  // bad part. Reads the table page holding it from each copy (only_copy); a
  // copy whose own (data, entry) pair verifies is served, its entry replaces
  // the cached one and the other copies are repaired (data and table page).
  // EIO naming every copy when no pair verifies.
  void RepairEntry(uint64_t block, const BlockRef& ref, uint8_t* dest,
                   std::shared_ptr<std::vector<CopyRead>> reads, std::shared_ptr<Op> keep,
                   Done done);
  void FailEveryCopy(uint64_t block, const BlockRef& ref, const std::vector<CopyRead>& reads,
                     const Done& done);
  // Rewrites copy `copy` of the set holding `ref` with `good` (which verifies
  // against the entry `digest`) under the block's exclusive lock, then
  // re-reads and verifies it.
  // `repaired`, when given, hears whether the copy was rewritten and verified.
  void Repair(uint64_t block, BlockRef ref, uint32_t copy,
              std::shared_ptr<std::vector<uint8_t>> good,
              std::function<void(bool repaired)> repaired = nullptr);
  void RepairLocked(uint64_t block, BlockRef ref, uint32_t copy,
                    std::shared_ptr<std::vector<uint8_t>> good,
                    std::function<void(bool repaired)> release);

  // Scrub (checksummed_scrub.cc): ScrubTarget.
  struct ScrubRead;
  struct ScrubStep;
  uint64_t scrub_blocks() const override { return size() / block_size_; }
  uint32_t scrub_block_size() const override { return block_size_; }
  void ScrubBlocks(uint64_t first, uint64_t count, bool repair, BlocksDone done) override;
  void ScrubCheckpoint(uint64_t cursor, uint64_t errors, Done done) override;
  void ScrubCompleted(uint64_t errors, Done done) override;
  void ScrubGone(const ScrubJob* job) override;
  void Later(Done done) override;
  void ScrubPinned(const std::shared_ptr<ScrubStep>& step, int err);
  // The copies a scrub reads of target `member`: every current one (-1: the member itself).
  std::vector<int32_t> ScrubCopies(uint32_t member) const;
  // Once the reads of a step are in: verdicts, counts and log lines; then the repairs.
  void ScrubVerify(const std::vector<ScrubRead>& reads, bool repair, BlocksDone done);
  void ScrubReport(const ScrubRead& read) const;
  // Adds a ScrubJob from scrub_ (its mode, cursor, errors and pause).
  void AddScrubJob();
  // At Open(): a scrub the superblocks record under way goes on from its cursor.
  void ResumeRecordedScrub();
  // scrub_ made durable (a superblock update of a redundant volume); logged when it fails.
  void SaveScrub(Done done = nullptr);

  void MergePartialBlocks(const std::shared_ptr<WriteOp>& op);
  void WriteData(const std::shared_ptr<WriteOp>& op);
  // WriteData's end, the blocks encrypted (op->source) and checksummed: the member write, then
  // the entries.
  void WriteChecksummed(const std::shared_ptr<WriteOp>& op,
                        std::shared_ptr<std::vector<Digest>> digests);
  // Zeroes whole blocks [first, first+count) in steps, one after the other.
  void ZeroBlocks(uint64_t first, uint64_t count, bool may_trim, bool fua, Done done);
  void ZeroStep(uint64_t first, uint64_t count, bool may_trim, bool fua, Done done);

  asio::io_context& io_;
  // Mirror and raid10: one set per K copies; empty for linear and stripe.
  // Before members_, which points into it.
  std::vector<std::unique_ptr<volume::MirrorSet>> sets_;
  std::vector<volume::MemberTarget*> copies_;  // by member index; nullptr: missing
  // The targets the layers below address (members, or sets), and their areas.
  std::vector<volume::MemberTarget*> members_;
  std::vector<MemberGeometry> geometries_;
  std::vector<Superblock> superblocks_;  // by member index
  Superblock view_;  // linear/stripe: member 0's; redundant: the volume's slot states
  std::vector<std::unique_ptr<DataAreaMember>> data_areas_;
  std::unique_ptr<volume::Volume> inner_;
  Checksummer checksummer_;
  std::unique_ptr<BlockCipher> cipher_;  // encrypted volumes: data is ciphertext on the members
  std::shared_ptr<WorkerCrypto> worker_crypto_;  // with options_.workers
  bool key_slot_changing_ = false;               // a SetKeySlot() is under way
  ChecksumOptions options_;
  uint32_t block_size_;
  volume::VolumeCapabilities caps_;
  RangeLock lock_;
  TableCache table_;
  WriteIntent intent_;
  RegionActivity activity_;
  Cleaner cleaner_;
  BackgroundJobs jobs_;
  bool open_ = false;
  bool unclean_at_open_ = false;  // a superblock said dirty: the last stop was a crash
  bool closing_ = false;
  bool superseded_ = false;  // a newer owner fenced this aggregator out
  size_t in_flight_ = 0;
  std::function<void()> drained_;  // Close()'s continuation, once nothing is in flight
  IntegrityCounters counters_;
  std::vector<uint64_t> member_checksum_errors_;  // by member index
  std::vector<uint64_t> repaired_blocks_;         // by member index
  std::vector<uint64_t> read_failovers_;          // by member index, after a mismatch
  // Redundant superblock updates: one in flight, the rest queued.
  bool updating_ = false;
  std::vector<PendingDemotion> pending_demotions_;
  std::vector<PendingUpdate> pending_updates_;
  // By slot: demoted, but no superblock update recording it has succeeded.
  std::vector<bool> undurable_demotions_;
  ScrubRecord scrub_;                      // every superblock update writes it (version 2)
  ScrubJob* scrub_job_ = nullptr;          // the scrub under way; jobs_ owns it
  ScrubTally scrub_tally_;                 // since the aggregator started
  std::vector<PendingCatchUp> catch_ups_;  // asked before Open()
  // By slot: ReattachCopy took a member, whose job is not added yet.
  std::vector<bool> returning_;
  // By slot: held for a new member (ReserveSlot) until AdoptMember or ReleaseSlot.
  std::vector<bool> reserved_;
  std::optional<Replacement> replacement_;
  Lifetime lifetime_;  // last: expires first
};

}  // namespace dst::integrity
