// The lifecycle of ChecksummedVolume: assembly (Create, Open with crash
// recovery), the superblock updates that mark it dirty and clean, the clean
// stop, and its counters.
#include "aggregator/integrity/checksummed_volume.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/recompute.h"
#include "aggregator/volume/set_geometry.h"
#include "common/join.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::integrity {

namespace {

// Checks a member (a copy) against its superblock and the volume's block size.
Status CheckMember(const volume::MemberTarget& member, const Superblock& sb, uint32_t block_size) {
  const volume::MemberCapabilities& caps = member.capabilities();
  if (caps.size != sb.geometry.member_size)
    return Status::Invalid("member " + member.name() + " has " + FormatSize(caps.size) +
                           " but was formatted with " + FormatSize(sb.geometry.member_size));
  if (caps.min_block > block_size)
    return Status::Invalid("member " + member.name() + " needs " + std::to_string(caps.min_block) +
                           "-byte blocks, larger than the " + "volume's " +
                           std::to_string(block_size));
  return Status::Ok();
}

std::vector<uint64_t> RegionCounts(const std::vector<MemberGeometry>& geometries) {
  std::vector<uint64_t> regions;
  for (const MemberGeometry& g : geometries)
    regions.push_back(g.regions());
  return regions;
}

// The table's checksummer and, for an encrypted volume, its cipher. `key` is the checksum key of
// a keyed volume and the master key of an encrypted one, whose MAC key the checksummer takes.
Status MakeVolumeKeys(const Superblock& sb, std::span<const uint8_t> key,
                      std::optional<Checksummer>* checksummer,
                      std::unique_ptr<BlockCipher>* cipher) {
  if (!sb.encrypted()) {
    Checksummer::Result ck = Checksummer::Create(sb.geometry.params.algorithm, key);
    DST_RETURN_IF_ERROR(ck.status);
    *checksummer = std::move(ck.checksummer);
    return Status::Ok();
  }
  DST_RETURN_IF_ERROR(CheckChecksumKey(sb, key));
  DST_RETURN_IF_ERROR(BlockCipher::Create(key, cipher));
  const CryptoPP::SecByteBlock mac = BlockCipher::MacKey(key);
  Checksummer::Result ck =
      Checksummer::Create(ChecksumAlgorithm::kBlake2bKeyed, {mac.data(), mac.size()});
  DST_RETURN_IF_ERROR(ck.status);
  *checksummer = std::move(ck.checksummer);
  return Status::Ok();
}

}  // namespace

Status ChecksummedVolume::Create(asio::io_context& io, std::vector<volume::MemberTarget*> members,
                                 std::vector<Superblock> superblocks, std::span<const uint8_t> key,
                                 ChecksumOptions options, std::unique_ptr<ChecksummedVolume>* out) {
  if (members.empty() || members.size() != superblocks.size())
    return Status::Invalid("a checksummed volume needs one superblock per member");
  const Superblock& first = superblocks[0];
  const uint32_t block_size = first.geometry.params.block_size;
  for (size_t m = 0; m < members.size(); ++m)
    DST_RETURN_IF_ERROR(CheckMember(*members[m], superblocks[m], block_size));
  if (first.layout == volume::LayoutKind::kStripe && first.chunk_size % block_size != 0)
    return Status::Invalid("stripe chunk " + FormatSize(first.chunk_size) +
                           " is not a multiple of the block size " + FormatSize(block_size));
  std::optional<Checksummer> checksummer;
  std::unique_ptr<BlockCipher> cipher;
  DST_RETURN_IF_ERROR(MakeVolumeKeys(first, key, &checksummer, &cipher));
  Assembly assembly;
  assembly.members = std::move(members);
  for (const Superblock& sb : superblocks)
    assembly.geometries.push_back(sb.geometry);
  assembly.view = first;
  assembly.superblocks = std::move(superblocks);
  std::unique_ptr<ChecksummedVolume> volume(
      new ChecksummedVolume(io, std::move(assembly), std::move(*checksummer), options));
  volume->cipher_ = std::move(cipher);
  DST_RETURN_IF_ERROR(volume->MakeWorkerCrypto(key));
  DST_RETURN_IF_ERROR(volume->AuthenticateTable(key));
  return Finish(std::move(volume), out);
}

Status ChecksummedVolume::CreateRedundant(asio::io_context& io, std::vector<RedundantSlot> slots,
                                          Superblock view, std::span<const uint8_t> key,
                                          ChecksumOptions options,
                                          std::unique_ptr<ChecksummedVolume>* out) {
  volume::SetGeometry sets;
  DST_RETURN_IF_ERROR(MakeSetGeometry(view.layout, view.member_count, view.copies, &sets));
  if (slots.size() != view.member_count)
    return Status::Invalid("a " + std::to_string(view.member_count) + "-member volume needs " +
                           std::to_string(view.member_count) + " slots, not " +
                           std::to_string(slots.size()));
  const uint32_t block_size = view.geometry.params.block_size;
  if (view.layout == volume::LayoutKind::kRaid10 && view.chunk_size % block_size != 0)
    return Status::Invalid("raid10 chunk " + FormatSize(view.chunk_size) +
                           " is not a multiple of the block size " + FormatSize(block_size));
  std::optional<Checksummer> checksummer;
  std::unique_ptr<BlockCipher> cipher;
  DST_RETURN_IF_ERROR(MakeVolumeKeys(view, key, &checksummer, &cipher));
  Assembly assembly;
  for (uint32_t s = 0; s < sets.sets(); ++s) {
    std::vector<volume::CopySetup> copies;
    std::optional<MemberGeometry> geometry;
    bool current = false;
    for (uint32_t c = 0; c < sets.copies; ++c) {
      const uint32_t i = sets.MemberOf(s, c);
      RedundantSlot& slot = slots[i];
      if (slot.target == nullptr && slot.role != volume::CopyRole::kOut)
        return Status::Invalid("slot " + std::to_string(i) + " is missing but not out");
      if (slot.target != nullptr) {
        if (!slot.superblock)
          return Status::Invalid("member " + slot.target->name() + " has no superblock");
        DST_RETURN_IF_ERROR(CheckMember(*slot.target, *slot.superblock, block_size));
        if (geometry && !SameAreas(*geometry, slot.superblock->geometry))
          return Status::Invalid("member " + slot.target->name() +
                                 " has areas that differ from the other copies of set " +
                                 std::to_string(s));
        if (!geometry) geometry = slot.superblock->geometry;
      }
      current = current || slot.role == volume::CopyRole::kCurrent;
      copies.push_back({.target = slot.target,
                        .role = slot.role,
                        .write_mostly = (view.slot_flags[i] & kSlotWriteMostly) != 0,
                        .cursor = view.cursor[i] * block_size});
      Superblock sb = slot.superblock.value_or(view);
      if (!slot.superblock) {
        sb.member_index = i;
        sb.member_uuid = view.slot_members[i];
      }
      assembly.superblocks.push_back(std::move(sb));
    }
    if (!geometry || !current)
      return Status::Invalid("set " + std::to_string(s) + " has no current copy");
    assembly.geometries.push_back(*geometry);
    assembly.sets.push_back(std::move(copies));
  }
  assembly.view = std::move(view);
  std::unique_ptr<ChecksummedVolume> volume(
      new ChecksummedVolume(io, std::move(assembly), std::move(*checksummer), options));
  volume->cipher_ = std::move(cipher);
  DST_RETURN_IF_ERROR(volume->MakeWorkerCrypto(key));
  DST_RETURN_IF_ERROR(volume->AuthenticateTable(key));
  for (size_t s = 0; s < volume->sets_.size(); ++s)
    if (volume->sets_[s]->capabilities().size < volume->geometries_[s].data.end())
      return Status::Invalid(volume->sets_[s]->name() + " has " +
                             FormatSize(volume->sets_[s]->capabilities().size) +
                             ", less than its data area needs (" +
                             FormatSize(volume->geometries_[s].data.end()) + ")");
  return Finish(std::move(volume), out);
}

Status ChecksummedVolume::AuthenticateTable(std::span<const uint8_t> key) {
  if (!view_.table_tags()) {
    if (authenticated())
      LOG_WARNING(
          "volume %s: its checksum table has no tags (created before table tags): a table entry "
          "zeroed or put back by an export host is not detected",
          view_.name.c_str());
    return Status::Ok();
  }
  std::optional<TableTagger> tagger;
  DST_RETURN_IF_ERROR(
      TableTagger::Create(key, std::span<const uint8_t, 16>(view_.volume_uuid), &tagger));
  table_.AuthenticatePages(std::move(*tagger));
  std::vector<uint64_t> pages;
  for (const MemberGeometry& g : geometries_)
    pages.push_back(g.table.size / kMetadataPageSize);
  auto anchor = std::make_unique<TableAnchor>(std::move(pages));
  if (!options_.state_dir.empty()) {
    DST_RETURN_IF_ERROR(anchor->OpenFile(options_.state_dir, view_.volume_uuid)
                            .Wrap("volume " + view_.name + ": table generations"));
    LOG_INFO("volume %s: table generations anchored in %s", view_.name.c_str(),
             anchor->path().c_str());
  }
  table_.AnchorPages(std::move(anchor));
  return Status::Ok();
}

void ChecksummedVolume::FlushMembers(Done done) {
  TableCache::WrittenBack written = table_.TakeWrittenBack();
  inner_->Flush([this, alive = lifetime_.Watch(), written = std::move(written),
                 done = std::move(done)](int err) mutable {
    if (!alive.expired()) table_.AnchorWrittenBack(std::move(written), err);
    done(err);
  });
}

Status ChecksummedVolume::MakeWorkerCrypto(std::span<const uint8_t> key) {
  if (options_.workers == nullptr) return Status::Ok();
  auto crypto = std::make_shared<WorkerCrypto>();
  crypto->volume_uuid = view_.volume_uuid;
  crypto->block_size = block_size_;
  for (size_t w = 0; w < options_.workers->size(); ++w) {
    std::optional<Checksummer> checksummer;
    std::unique_ptr<BlockCipher> cipher;
    DST_RETURN_IF_ERROR(MakeVolumeKeys(view_, key, &checksummer, &cipher));
    crypto->workers.push_back({std::move(*checksummer), std::move(cipher)});
  }
  worker_crypto_ = std::move(crypto);
  return Status::Ok();
}

Status ChecksummedVolume::Finish(std::unique_ptr<ChecksummedVolume> volume,
                                 std::unique_ptr<ChecksummedVolume>* out) {
  const Superblock& view = volume->view_;
  std::vector<volume::MemberTarget*> views;
  for (size_t m = 0; m < volume->members_.size(); ++m) {
    volume->data_areas_.push_back(
        std::make_unique<DataAreaMember>(volume->members_[m], volume->geometries_[m].data));
    views.push_back(volume->data_areas_.back().get());
  }
  volume::LayoutKind kind = view.layout;
  if (volume->redundant()) {
    volume::SetGeometry sets;
    DST_RETURN_IF_ERROR(MakeSetGeometry(view.layout, view.member_count, view.copies, &sets));
    kind = sets.set_layout();
  }
  DST_RETURN_IF_ERROR(volume::Volume::Create(view.name, volume->options_.description, kind,
                                             view.chunk_size, views, &volume->inner_));
  if (volume->inner_->size() != view.volume_size)
    return Status::Invalid("the members' data areas make " + FormatSize(volume->inner_->size()) +
                           ", but the superblocks say " + FormatSize(view.volume_size));
  volume->caps_ = volume->inner_->capabilities();
  volume->caps_.min_block = 1;  // partial blocks are read-modify-write
  volume->caps_.preferred_block =
      std::max(volume->caps_.preferred_block, view.geometry.params.block_size);
  volume->caps_.can_trim = true;  // the table forgets the blocks; members are zeroed
  volume->caps_.can_zero = true;
  volume->caps_.can_fast_zero = false;    // partial blocks are written, never fast
  volume->caps_.can_block_status = true;  // from the table
  *out = std::move(volume);
  return Status::Ok();
}

ChecksummedVolume::ChecksummedVolume(asio::io_context& io, Assembly assembly,
                                     Checksummer checksummer, ChecksumOptions options)
    : io_(io),
      members_(MakeTargets(assembly)),
      geometries_(std::move(assembly.geometries)),
      superblocks_(std::move(assembly.superblocks)),
      view_(std::move(assembly.view)),
      checksummer_(std::move(checksummer)),
      options_(std::move(options)),
      block_size_(view_.geometry.params.block_size),
      table_(members_, geometries_, options_.table_cache_bytes),
      intent_(members_, geometries_),
      activity_(RegionCounts(geometries_)),
      cleaner_(io, view_.name, options_.clean_interval, table_, intent_, activity_,
               [this](Done done) { FlushMembers(std::move(done)); }),
      jobs_(io, options_.background),
      scrub_(view_.scrub) {
  member_checksum_errors_.assign(copies_.size(), 0);
  repaired_blocks_.assign(copies_.size(), 0);
  read_failovers_.assign(copies_.size(), 0);
  undurable_demotions_.assign(copies_.size(), false);
  returning_.assign(copies_.size(), false);
  reserved_.assign(copies_.size(), false);
  if (redundant())
    intent_.TrackMissedWrites(
        [this](uint32_t set) { return sets_[set]->current_copies() < sets_[set]->copy_count(); });
}

std::vector<volume::MemberTarget*> ChecksummedVolume::MakeTargets(Assembly& assembly) {
  if (assembly.sets.empty()) {
    copies_ = assembly.members;
    return assembly.members;
  }
  std::vector<volume::MemberTarget*> targets;
  for (uint32_t s = 0; s < assembly.sets.size(); ++s) {
    for (const volume::CopySetup& copy : assembly.sets[s])
      copies_.push_back(copy.target);
    sets_.push_back(std::make_unique<volume::MirrorSet>(io_, s, assembly.sets[s],
                                                        static_cast<volume::SetHealth*>(this)));
    targets.push_back(sets_.back().get());
  }
  return targets;
}

ChecksummedVolume::~ChecksummedVolume() = default;

void ChecksummedVolume::WriteSuperblocks(VolumeState state, Done done) {
  WriteSuperblocks(state, nullptr, std::move(done));
}

void ChecksummedVolume::WriteSuperblocks(VolumeState state, std::function<void(Superblock&)> edit,
                                         Done done) {
  if (redundant()) return QueueUpdate(state, std::move(done));
  uint64_t event = 0;
  for (const Superblock& sb : superblocks_)
    event = std::max(event, sb.event);
  ++event;
  auto updated = std::make_shared<std::vector<Superblock>>(superblocks_);
  auto join = MakeJoin([this, alive = lifetime_.Watch(), updated, done = std::move(done)](int err) {
    if (alive.expired()) return;
    if (err == 0) {
      superblocks_ = *updated;
      view_ = superblocks_[0];
    }
    done(err);
  });
  for (size_t m = 0; m < members_.size(); ++m) {
    Superblock& sb = (*updated)[m];
    sb.event = event;
    sb.state = state;
    if (edit) edit(sb);
    auto slot = std::make_shared<std::vector<uint8_t>>(kSlotSize);
    if (Status s = Encode(sb, std::span<uint8_t, kSlotSize>(slot->data(), kSlotSize)); !s.ok()) {
      LOG_ERROR("volume %s: superblock of member %zu: %s", name().c_str(), m, s.message().c_str());
      Part(join)(s.err());
      continue;
    }
    volume::MemberTarget* member = members_[m];
    auto write = std::make_shared<volume::MemberIo>();
    write->op = volume::MemberOp::kWrite;
    write->offset = SlotOffset(NextSlot(event));
    write->length = kSlotSize;
    write->data = slot->data();
    // Current only once flushed: the other slot stays the fallback until then.
    write->done = [member, slot, part = Part(join)](int err) {
      if (err != 0 || !member->capabilities().can_flush) return part(err);
      auto flush = std::make_shared<volume::MemberIo>();
      flush->op = volume::MemberOp::kFlush;
      flush->done = part;
      member->Submit(std::move(flush));
    };
    member->Submit(std::move(write));
  }
  join->Arrive(0);
}

void ChecksummedVolume::Open(Done done) {
  unclean_at_open_ =
      std::any_of(superblocks_.begin(), superblocks_.end(),
                  [](const Superblock& sb) { return sb.state == VolumeState::kDirty; });
  // A redundant volume's bits are read from every current copy: a crash can
  // leave a bit on one copy only.
  std::function<std::vector<int32_t>(uint32_t)> copies = [](uint32_t) {
    return std::vector<int32_t>{-1};
  };
  if (redundant())
    copies = [this](uint32_t set) {
      std::vector<int32_t> current;
      for (uint32_t c : CurrentCopies(set))
        current.push_back(static_cast<int32_t>(c));
      return current;
    };
  intent_.Load(std::move(copies), [this, done = std::move(done)](int err) mutable {
    if (err != 0) {
      LOG_ERROR("volume %s: reading the write-intent bitmaps: %s", name().c_str(),
                std::strerror(err));
      return done(err);
    }
    WriteSuperblocks(VolumeState::kDirty, [this, done = std::move(done)](int sb_err) mutable {
      if (sb_err != 0) {
        LOG_ERROR("volume %s: marking the superblocks dirty: %s", name().c_str(),
                  std::strerror(sb_err));
        return done(sb_err);
      }
      RecoverDirtyRegions([this, done = std::move(done)](int rc_err) mutable {
        if (rc_err != 0) return done(rc_err);
        open_ = true;
        cleaner_.Start();
        ResumeRecordedScrub();
        StartCatchUps(std::move(done));
      });
    });
  });
}

std::vector<uint32_t> ChecksummedVolume::CurrentCopies(uint32_t set) const {
  std::vector<uint32_t> current;
  for (uint32_t c = 0; c < sets_[set]->copy_count(); ++c)
    if (sets_[set]->copy(c) != nullptr && sets_[set]->role(c) == volume::CopyRole::kCurrent)
      current.push_back(c);
  return current;
}

// Recomputes the entries of the regions whose write-intent bit is set: after
// a crash, those whose table may disagree with their data. The copies of a
// set are reconciled first (recompute.h).
void ChecksummedVolume::RecoverDirtyRegions(Done done) {
  RecomputeInputs inputs{
      .volume = name(),
      .data_areas = {},
      .layout = &inner_->layout(),
      .table = &table_,
      .block_size = block_size_,
      .checksum = [this](uint64_t block, const uint8_t* data) { return ChecksumOf(block, data); },
      .counters = &counters_,
      .owner = lifetime_.Watch(),
      .copies = std::nullopt,
      .authenticated = authenticated(),
  };
  if (redundant())
    inputs.copies = RecomputeCopies{
        .current = [this](uint32_t set) { return CurrentCopies(set); },
        .targets = members_,
        .geometries = geometries_,
        .region_size = view_.geometry.params.region_size,
        .describe =
            [this](uint32_t set, uint32_t copy) {
              const uint32_t slot = set * copies_per_set() + copy;
              return "member " + std::to_string(slot) + " " + copies_[slot]->name();
            },
        .mismatches = &counters_.resync_mismatches,
    };
  std::vector<std::vector<uint64_t>> dirty;
  uint64_t total_regions = 0;
  for (uint32_t m = 0; m < members_.size(); ++m) {
    inputs.data_areas.push_back(data_areas_[m].get());
    dirty.push_back(intent_.SetRegions(m));
    total_regions += geometries_[m].regions();
  }
  RecomputePlan plan = PlanRecompute(inputs, view_.geometry.params.region_size, dirty);
  if (plan.slices.empty()) {
    if (unclean_at_open_)
      LOG_INFO("volume %s: unclean stop, but no region was dirty", name().c_str());
    return done(0);
  }
  LOG_INFO("volume %s: %s: recomputing the checksums of %llu of %llu regions (%s)", name().c_str(),
           unclean_at_open_ ? "unclean stop" : "write-intent bits set on a clean volume",
           static_cast<unsigned long long>(plan.regions),
           static_cast<unsigned long long>(total_regions), FormatSize(plan.bytes).c_str());
  Recompute(std::move(inputs), std::move(plan), std::move(done));
}

void ChecksummedVolume::Close(Done done) {
  if (!open_ || closing_) return done(0);
  closing_ = true;
  cleaner_.Stop();
  // Background steps hold locks and write like requests: they end first.
  jobs_.Shutdown([this, alive = lifetime_.Watch(), done = std::move(done)](int) mutable {
    if (alive.expired()) return;
    // A replacement ends without its new member, which nothing durable names yet.
    ReplacementFailed("the volume is stopping");
    drained_ = [this, alive = lifetime_.Watch(), done = std::move(done)]() mutable {
      if (!alive.expired()) StopClean(std::move(done));
    };
    if (in_flight_ == 0) asio::post(io_, std::exchange(drained_, nullptr));
  });
}

std::string ChecksummedVolume::CloseProgress() const {
  std::string text = closing_ ? "closing" : "not closing";
  text += ": " + std::to_string(in_flight_) + " requests in flight (" +
          (drained_ ? "waited for" : "not waited for yet") + "), " +
          std::to_string(jobs_.Status().size()) + " background jobs, " +
          (cleaner_.cleaning() ? "a cleaner pass under way" : "no cleaner pass") + ", " +
          (updating_ ? "a superblock update under way" : "no superblock update") + " (" +
          std::to_string(pending_updates_.size() + pending_demotions_.size()) + " queued), " +
          std::to_string(table_.dirty_pages()) + " dirty table pages, " +
          std::to_string(intent_.set_count()) + " write-intent bits";
  for (const auto& set : sets_)
    text += ", set " + std::to_string(set->set()) + " [" + set->Health() + "]";
  return text;
}

// Once nothing is in flight: a last cleaner pass, which leaves no bit set,
// then the superblocks say clean.
void ChecksummedVolume::StopClean(Done done) {
  cleaner_.Clean([this, done = std::move(done)](int err) mutable {
    // Closed: no block is encrypted or decrypted any more, so the keys go now (a removed volume
    // stays in memory until the aggregator exits).
    cipher_.reset();
    worker_crypto_.reset();
    if (err != 0 || intent_.set_count() != 0) {
      LOG_ERROR("volume %s: could not stop clean; the next start recomputes dirty regions",
                name().c_str());
      return done(err != 0 ? err : EIO);
    }
    WriteSuperblocks(VolumeState::kClean, [this, done = std::move(done)](int sb_err) {
      if (sb_err == 0)
        LOG_INFO("volume %s: stopped clean", name().c_str());
      else
        LOG_ERROR("volume %s: marking the superblocks clean: %s", name().c_str(),
                  std::strerror(sb_err));
      done(sb_err);
    });
  });
}

std::vector<NamedCounter> ChecksummedVolume::Counters() const {
  const IntegrityCounters& c = counters_;
  const TableCacheCounters& t = table_.counters();
  std::vector<NamedCounter> counters{
      {"checksum_errors", c.checksum_errors, true,
       "Blocks that failed verification twice (EIO to the client)"},
      {"rereads_recovered", c.rereads_recovered, true,
       "Blocks that verified when read a second time"},
      {"rmw_blocks", c.rmw_blocks, true, "Partial blocks merged with a write"},
      {"recomputed_regions", c.recomputed_regions, false,
       "Regions recomputed at the last assembly"},
      {"recomputed_bytes", c.recomputed_bytes, false,
       "Bytes of data read to recompute checksums at the last assembly"},
      {"recovery_unverified", c.recovery_unverified, false,
       "Keyed and encrypted volumes: blocks of dirty regions that did not verify at the last "
       "assembly (EIO until rewritten)"},
      {"dirty_regions", intent_.set_count(), false, "Write-intent bits set"},
      {"bitmap_syncs", intent_.syncs(), true, "Write-intent bitmap updates (write and flush)"},
      {"table_pages", table_.cached_pages(), false, "Checksum table pages cached"},
      {"table_dirty", table_.dirty_pages(), false, "Cached table pages not yet written back"},
      {"table_loads", t.loads, true, "Checksum table pages read from members"},
      {"table_writebacks", t.writebacks, true, "Checksum table pages written to members"},
      {"table_evictions", t.evictions, true, "Checksum table pages dropped from the cache"},
      {"table_errors", t.errors, true, "Failed checksum table page reads and writes"},
      {"table_unverified", t.unverified, true,
       "Checksum table pages that failed their tags (their blocks read as EIO)"},
      {"table_rolled_back", t.rolled_back, true,
       "Checksum table pages older than their anchored generation (their blocks read as EIO)"},
      {"table_anchor_errors", t.anchor_errors, true,
       "Failed writes of the table generations file (--state-dir)"},
      {"scrub_blocks", scrub_tally_.blocks, true, "Written blocks a scrub verified on every copy"},
      {"scrub_errors", scrub_tally_.errors, true,
       "Bad copies of blocks a scrub found (mismatch or failed read)"},
      {"scrub_repaired", scrub_tally_.repaired, true,
       "Bad copies a scrub rewrote from a copy that verifies"},
      {"scrub_unrecoverable", scrub_tally_.unrecoverable, true,
       "Blocks a scrub found bad on every copy"},
      {"scrub_last_completed", scrub_.last_completed, false,
       "When the last scrub completed, seconds since the Unix epoch (0: never)"},
      {"scrub_last_clean", scrub_.last_result == ScrubResult::kClean, false,
       "1 when the last completed scrub found nothing"},
  };
  if (!redundant()) return counters;
  uint64_t repaired = 0;
  uint64_t failovers = 0;
  for (uint32_t i = 0; i < copies_.size(); ++i) {
    repaired += repaired_blocks_[i];
    failovers +=
        read_failovers_[i] + sets_[i / copies_per_set()]->read_failovers(i % copies_per_set());
  }
  counters.push_back({"repaired_blocks", repaired, true,
                      "Blocks rewritten from another copy after a checksum mismatch"});
  counters.push_back({"read_failovers", failovers, true,
                      "Reads served by another copy after an error or a checksum mismatch"});
  counters.push_back({"resync_mismatches", counters_.resync_mismatches, true,
                      "Blocks whose copies differed in regions reconciled after an unclean stop"});
  counters.push_back({"resync_bytes", counters_.resync_bytes, true,
                      "Bytes copied to a returning copy by a bitmap resync"});
  counters.push_back(
      {"rebuild_bytes", counters_.rebuild_bytes, true, "Bytes copied to a copy by a full rebuild"});
  counters.push_back({"resync_unrecoverable", counters_.resync_unrecoverable, true,
                      "Blocks a resync or rebuild found bad on every current copy"});
  return counters;
}

std::vector<volume::JobState> ChecksummedVolume::JobStates() const {
  std::vector<volume::JobState> out;
  for (const JobStatus& j : jobs_.Status()) {
    out.push_back({
        .kind = JobKindName(j.kind),
        .what = j.what,
        .state = j.paused ? "paused" : (j.running ? "running" : "waiting"),
        .detail = j.detail,
        .done_bytes = j.done_bytes,
        .total_bytes = j.total_bytes,
        .bytes_per_second = static_cast<uint64_t>(j.bytes_per_second),
        .eta_seconds = j.eta ? std::optional<uint64_t>(j.eta->count()) : std::nullopt,
    });
  }
  return out;
}

volume::DeviceState ChecksummedVolume::State() const {
  volume::IntegrityState integrity;
  integrity.state = std::string(VolumeStateName(view_.state));
  integrity.checksum = ProtectionName(view_);
  integrity.counters = Counters();
  integrity.member_checksum_errors = member_checksum_errors_;
  const RateLimits& limits = jobs_.limits();
  if (!redundant())
    return {view_.layout, view_.member_count,          std::move(integrity),        std::nullopt,
            JobStates(),  limits.min_bytes_per_second, limits.max_bytes_per_second, std::nullopt};
  volume::RedundancyState redundancy;
  redundancy.copies = view_.copies;
  redundancy.generation = FormatUuid(view_.generation);
  for (const auto& set : sets_)
    redundancy.set_health.push_back(set->Health());
  for (uint32_t i = 0; i < copies_.size(); ++i) {
    const uint32_t k = copies_per_set();
    redundancy.slots.push_back({
        .uri = copies_[i] != nullptr ? copies_[i]->name() : "",
        .state = std::string(MemberStateName(view_.member_states[i])),
        .stale_since = view_.stale_since[i],
        .repaired_blocks = repaired_blocks_[i],
        .read_failovers = read_failovers_[i] + sets_[i / k]->read_failovers(i % k),
        .write_mostly = sets_[i / k]->write_mostly(i % k),
    });
  }
  return {
      view_.layout, view_.member_count,          std::move(integrity),        std::move(redundancy),
      JobStates(),  limits.min_bytes_per_second, limits.max_bytes_per_second, std::nullopt};
}

std::string ChecksummedVolume::StatsLine() const {
  std::string line = "state=" + std::string(VolumeStateName(view_.state));
  for (const NamedCounter& c : Counters())
    line += " " + std::string(c.name) + "=" + std::to_string(c.value);
  return line;
}

}  // namespace dst::integrity
