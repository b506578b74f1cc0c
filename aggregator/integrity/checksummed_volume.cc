// The lifecycle of ChecksummedVolume: assembly (Create, Open with crash
// recovery), the superblock updates that mark it dirty and clean, the clean
// stop, and its counters.
#include "aggregator/integrity/checksummed_volume.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aggregator/integrity/recompute.h"
#include "common/join.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::integrity {

Status ChecksummedVolume::Create(asio::io_context& io, std::vector<volume::MemberTarget*> members,
                                 std::vector<Superblock> superblocks, std::span<const uint8_t> key,
                                 ChecksumOptions options, std::unique_ptr<ChecksummedVolume>* out) {
  if (members.empty() || members.size() != superblocks.size())
    return Status::Invalid("a checksummed volume needs one superblock per member");
  const Superblock& first = superblocks[0];
  const uint32_t block_size = first.geometry.params.block_size;
  for (size_t m = 0; m < members.size(); ++m) {
    const Superblock& sb = superblocks[m];
    const volume::MemberCapabilities& caps = members[m]->capabilities();
    if (caps.size != sb.geometry.member_size)
      return Status::Invalid("member " + members[m]->name() + " has " + FormatSize(caps.size) +
                             " but was formatted with " + FormatSize(sb.geometry.member_size));
    if (caps.min_block > block_size)
      return Status::Invalid("member " + members[m]->name() + " needs " +
                             std::to_string(caps.min_block) + "-byte blocks, larger than the " +
                             "volume's " + std::to_string(block_size));
  }
  if (first.layout == volume::LayoutKind::kStripe && first.chunk_size % block_size != 0)
    return Status::Invalid("stripe chunk " + FormatSize(first.chunk_size) +
                           " is not a multiple of the block size " + FormatSize(block_size));
  Checksummer::Result ck = Checksummer::Create(first.geometry.params.algorithm, key);
  if (!ck.ok()) return ck.status;
  std::unique_ptr<ChecksummedVolume> volume(new ChecksummedVolume(
      io, std::move(members), std::move(superblocks), std::move(*ck.checksummer), options));
  std::vector<volume::MemberTarget*> views;
  for (size_t m = 0; m < volume->members_.size(); ++m) {
    volume->data_areas_.push_back(std::make_unique<DataAreaMember>(
        volume->members_[m], volume->superblocks_[m].geometry.data));
    views.push_back(volume->data_areas_.back().get());
  }
  DST_RETURN_IF_ERROR(volume::Volume::Create(first.name, options.description, first.layout,
                                             first.chunk_size, views, &volume->inner_));
  if (volume->inner_->size() != first.volume_size)
    return Status::Invalid("the members' data areas make " + FormatSize(volume->inner_->size()) +
                           ", but the superblocks say " + FormatSize(first.volume_size));
  volume->caps_ = volume->inner_->capabilities();
  volume->caps_.min_block = 1;  // partial blocks are read-modify-write
  volume->caps_.preferred_block = std::max(volume->caps_.preferred_block, block_size);
  volume->caps_.can_trim = true;  // the table forgets the blocks; members are zeroed
  volume->caps_.can_zero = true;
  volume->caps_.can_fast_zero = false;    // partial blocks are written, never fast
  volume->caps_.can_block_status = true;  // from the table
  *out = std::move(volume);
  return Status::Ok();
}

namespace {

std::vector<MemberGeometry> GeometriesOf(const std::vector<Superblock>& superblocks) {
  std::vector<MemberGeometry> geometries;
  for (const Superblock& sb : superblocks)
    geometries.push_back(sb.geometry);
  return geometries;
}

std::vector<uint64_t> RegionCounts(const std::vector<Superblock>& superblocks) {
  std::vector<uint64_t> regions;
  for (const Superblock& sb : superblocks)
    regions.push_back(sb.geometry.regions());
  return regions;
}

}  // namespace

ChecksummedVolume::ChecksummedVolume(asio::io_context& io,
                                     std::vector<volume::MemberTarget*> members,
                                     std::vector<Superblock> superblocks, Checksummer checksummer,
                                     ChecksumOptions options)
    : io_(io),
      members_(std::move(members)),
      superblocks_(std::move(superblocks)),
      checksummer_(std::move(checksummer)),
      options_(std::move(options)),
      block_size_(superblocks_[0].geometry.params.block_size),
      table_(members_, GeometriesOf(superblocks_), options_.table_cache_bytes),
      intent_(members_, GeometriesOf(superblocks_)),
      activity_(RegionCounts(superblocks_)),
      cleaner_(io, superblocks_[0].name, options_.clean_interval, table_, intent_, activity_,
               [this](Done done) { inner_->Flush(std::move(done)); }) {
  member_checksum_errors_.assign(members_.size(), 0);
}

ChecksummedVolume::~ChecksummedVolume() = default;

void ChecksummedVolume::WriteSuperblocks(VolumeState state, Done done) {
  uint64_t event = 0;
  for (const Superblock& sb : superblocks_)
    event = std::max(event, sb.event);
  ++event;
  auto updated = std::make_shared<std::vector<Superblock>>(superblocks_);
  auto join = MakeJoin([this, alive = lifetime_.Watch(), updated, done = std::move(done)](int err) {
    if (alive.expired()) return;
    if (err == 0) superblocks_ = *updated;
    done(err);
  });
  for (size_t m = 0; m < members_.size(); ++m) {
    Superblock& sb = (*updated)[m];
    sb.event = event;
    sb.state = state;
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
  intent_.Load([this, done = std::move(done)](int err) mutable {
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
      RecoverDirtyRegions([this, done = std::move(done)](int rc_err) {
        if (rc_err == 0) {
          open_ = true;
          cleaner_.Start();
        }
        done(rc_err);
      });
    });
  });
}

// Recomputes the entries of the regions whose write-intent bit is set: after
// a crash, those whose table may disagree with their data.
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
  };
  std::vector<std::vector<uint64_t>> dirty;
  uint64_t total_regions = 0;
  for (uint32_t m = 0; m < members_.size(); ++m) {
    inputs.data_areas.push_back(data_areas_[m].get());
    dirty.push_back(intent_.SetRegions(m));
    total_regions += superblocks_[m].geometry.regions();
  }
  RecomputePlan plan = PlanRecompute(inputs, superblocks_[0].geometry.params.region_size, dirty);
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
  drained_ = [this, alive = lifetime_.Watch(), done = std::move(done)]() mutable {
    if (!alive.expired()) StopClean(std::move(done));
  };
  if (in_flight_ == 0) asio::post(io_, std::exchange(drained_, nullptr));
}

// Once nothing is in flight: a last cleaner pass, which leaves no bit set,
// then the superblocks say clean.
void ChecksummedVolume::StopClean(Done done) {
  cleaner_.Clean([this, done = std::move(done)](int err) mutable {
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
  return {
      {"checksum_errors", c.checksum_errors, true,
       "Blocks that failed verification twice (EIO to the client)"},
      {"rereads_recovered", c.rereads_recovered, true,
       "Blocks that verified when read a second time"},
      {"rmw_blocks", c.rmw_blocks, true, "Partial blocks merged with a write"},
      {"recomputed_regions", c.recomputed_regions, false,
       "Regions recomputed at the last assembly"},
      {"recomputed_bytes", c.recomputed_bytes, false,
       "Bytes of data read to recompute checksums at the last assembly"},
      {"dirty_regions", intent_.set_count(), false, "Write-intent bits set"},
      {"bitmap_syncs", intent_.syncs(), true, "Write-intent bitmap updates (write and flush)"},
      {"table_pages", table_.cached_pages(), false, "Checksum table pages cached"},
      {"table_dirty", table_.dirty_pages(), false, "Cached table pages not yet written back"},
      {"table_loads", t.loads, true, "Checksum table pages read from members"},
      {"table_writebacks", t.writebacks, true, "Checksum table pages written to members"},
      {"table_evictions", t.evictions, true, "Checksum table pages dropped from the cache"},
      {"table_errors", t.errors, true, "Failed checksum table page reads and writes"},
  };
}

volume::DeviceState ChecksummedVolume::State() const {
  volume::IntegrityState integrity;
  integrity.state = std::string(VolumeStateName(superblocks_[0].state));
  integrity.checksum = ChecksumAlgorithmName(superblocks_[0].geometry.params.algorithm);
  integrity.counters = Counters();
  integrity.member_checksum_errors = member_checksum_errors_;
  return {superblocks_[0].layout, superblocks_[0].member_count, std::move(integrity), std::nullopt};
}

std::string ChecksummedVolume::StatsLine() const {
  std::string line = "state=" + std::string(VolumeStateName(superblocks_[0].state));
  for (const NamedCounter& c : Counters())
    line += " " + std::string(c.name) + "=" + std::to_string(c.value);
  return line;
}

}  // namespace dst::integrity
