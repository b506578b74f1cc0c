#include "aggregator/volume_build.h"

#include <string.h>  // explicit_bzero

#include <algorithm>

#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/key_file.h"
#include "aggregator/member/nbd_member.h"
#include "aggregator/member_add.h"
#include "aggregator/member_return.h"
#include "aggregator/volume/set_geometry.h"
#include "aggregator/volume/volume.h"
#include "aggregator/volume_key.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

Status PlanLinearAssembly(const VolumeConfig& v, std::vector<integrity::MemberSuperblock> found,
                          const std::vector<UnreadMember>& unread, AssemblyPlan* plan) {
  if (!unread.empty()) return unread.front().why;
  const integrity::Superblock& sb = found.front().superblock;
  if (v.allow_degraded || v.discard_slot)
    return Status::Invalid("volume " + sb.name +
                           ": --allow-degraded and --discard are for mirror and raid10 volumes; "
                           "this one is " +
                           std::string(volume::LayoutKindName(sb.layout)));
  return integrity::OrderMembers(std::move(found), &plan->members);
}

// The volume as its slots take new members while it serves: each with the transaction options
// its slot got at start.
SlotVolume SlotsOf(const ServeConfig& config, const RedundantPlan& plan,
                   integrity::ChecksummedVolume& volume, const control::Server& server) {
  SlotVolume slots{.volume = &volume, .volume_index = server.volumes.size(), .options = {}};
  for (uint32_t slot = 0; slot < plan.slots.size(); ++slot)
    slots.options.push_back(RedundantMemberOptions(config, plan, slot));
  return slots;
}

// The volume's members that are out (missing at start, demoted later) come back while it serves.
void WatchForReturns(const SlotVolume& slots, const RedundantPlan& plan, control::Server& server) {
  ReturnWatcher::WatchedVolume watched;
  static_cast<SlotVolume&>(watched) = slots;
  for (const auto& m : plan.slots)
    watched.uris.push_back(m ? std::optional(m->uri) : std::nullopt);
  for (const UnreadMember& m : plan.unread)
    watched.unread.push_back(m.uri);
  server.returns->AddVolume(std::move(watched));
}

// The master key of encrypted volume `sb`, from the secret the volume's configuration names.
Status OpenVolumeKey(const VolumeConfig& v, const integrity::Superblock& sb,
                     std::vector<uint8_t>* master) {
  VolumeSecret secret;
  DST_RETURN_IF_ERROR(ReadVolumeSecret("volume " + sb.name + " is encrypted", v.key_file,
                                       v.passphrase_file, &secret));
  return OpenMasterKey(sb, secret, master);
}

}  // namespace

// Reads every member's superblocks and checks that they make one volume (assembly.h); for
// mirror and raid10, decides which copies serve (redundant_serve.h), a member that cannot be
// read counting as missing.
Status PlanAssembly(const VolumeConfig& v, const member::MemberTls& tls, AssemblyPlan* plan) {
  std::vector<integrity::MemberSuperblock> found;
  std::vector<UnreadMember> unread;
  for (const std::string& uri : v.members) {
    integrity::MemberReadResult r;
    if (Status s = integrity::ReadSuperblocks(uri, tls, &r); !s.ok()) {
      unread.push_back({uri, s});
      continue;
    }
    if (!r.choice_status.ok())
      return Status::Error(r.choice_status.err(),
                           "member " + uri + ": " + r.choice_status.message() +
                               " (format it with dst-aggregator create, or serve it with --raw)");
    found.push_back({uri, r.choice.superblock});
  }
  if (found.empty()) return unread.front().why;
  // An encrypted volume's key first, one line before anything else is said about the volume:
  // from the freshest superblock, whose key slots are the newest.
  const integrity::Superblock& freshest =
      std::max_element(found.begin(), found.end(), [](const auto& a, const auto& b) {
        return a.superblock.event < b.superblock.event;
      })->superblock;
  if (freshest.encrypted()) DST_RETURN_IF_ERROR(OpenVolumeKey(v, freshest, &plan->key));
  if (volume::IsRedundant(found.front().superblock.layout)) {
    plan->redundant.emplace();
    DST_RETURN_IF_ERROR(
        PlanRedundantAssembly(v, std::move(found), std::move(unread), &*plan->redundant));
  } else {
    DST_RETURN_IF_ERROR(PlanLinearAssembly(v, std::move(found), unread, plan));
  }
  const integrity::Superblock& sb = plan->superblock();
  if (!v.name.empty() && v.name != sb.name)
    return Status::Invalid("volume " + v.name + ": the members belong to volume \"" + sb.name +
                           "\"");
  if (sb.encrypted()) {
    // Opened above; every member must agree that the volume is encrypted (assembly checks it).
  } else if (!v.passphrase_file.empty()) {
    return Status::Invalid("volume " + sb.name +
                           ": a passphrase was given but it is not encrypted");
  } else if (!v.key_file.empty()) {
    DST_RETURN_IF_ERROR(ReadKeyFile(v.key_file, &plan->key));
  }
  Status s = integrity::CheckChecksumKey(sb, plan->key);
  if (!s.ok() && !plan->key.empty()) explicit_bzero(plan->key.data(), plan->key.size());
  return s;
}

void LogAssembly(const AssemblyPlan& plan) {
  if (plan.redundant) return;  // PlanRedundantAssembly logs its slots
  const integrity::Superblock& sb = plan.members[0].superblock;
  uint64_t newest = 0, oldest = UINT64_MAX;
  for (const auto& m : plan.members) {
    newest = std::max(newest, m.superblock.event);
    oldest = std::min(oldest, m.superblock.event);
  }
  LOG_INFO("volume %s: assembled from %zu members (uuid %s, %s, checksum %s, %s blocks)",
           sb.name.c_str(), plan.members.size(), integrity::FormatUuid(sb.volume_uuid).c_str(),
           std::string(volume::LayoutKindName(sb.layout)).c_str(),
           integrity::ProtectionText(sb).c_str(),
           FormatSize(sb.geometry.params.block_size).c_str());
  if (oldest != newest)
    LOG_WARNING(
        "volume %s: members' superblocks are at events %llu to %llu: the last update "
        "did not reach every member",
        sb.name.c_str(), static_cast<unsigned long long>(oldest),
        static_cast<unsigned long long>(newest));
}

std::vector<std::optional<std::string>> OrderedMemberUris(const VolumeConfig& v, bool raw,
                                                          const AssemblyPlan& plan,
                                                          std::string* name) {
  std::vector<std::optional<std::string>> uris;
  if (plan.redundant) {
    for (const auto& m : plan.redundant->slots)
      uris.push_back(m ? std::optional(m->uri) : std::nullopt);
    *name = plan.redundant->name;
  } else if (!raw) {
    for (const auto& m : plan.members)
      uris.push_back(m.uri);
    *name = plan.members[0].superblock.name;
  } else {
    uris.assign(v.members.begin(), v.members.end());
    *name = v.name;
  }
  return uris;
}

member::TransactionOptions MemberOptions(const ServeConfig& config, const AssemblyPlan& plan,
                                         uint32_t slot) {
  return plan.redundant ? RedundantMemberOptions(config, *plan.redundant, slot)
                        : config.transactions;
}

Status BuildRawVolume(const VolumeConfig& v, const std::vector<volume::MemberTarget*>& targets,
                      std::unique_ptr<volume::BlockDevice>* out) {
  std::unique_ptr<volume::Volume> volume;
  DST_RETURN_IF_ERROR(
      volume::Volume::Create(v.name, v.description, v.layout, v.chunk_size, targets, &volume));
  LOG_INFO("volume %s: %s, %zu members, %s", v.name.c_str(),
           std::string(volume::LayoutKindName(v.layout)).c_str(), v.members.size(),
           FormatSize(volume->size()).c_str());
  for (size_t m = 0; m < v.members.size(); ++m)
    LOG_INFO("volume %s: member %zu %s: %s used of %s%s", v.name.c_str(), m, v.members[m].c_str(),
             FormatSize(volume->layout().member_usable_size(m)).c_str(),
             FormatSize(targets[m]->capabilities().size).c_str(),
             targets[m]->capabilities().read_only ? " (read-only)" : "");
  *out = std::move(volume);
  return Status::Ok();
}

Status MakeChecksummedVolume(const ServeConfig& config, const VolumeConfig& v, AssemblyPlan& plan,
                             const std::vector<volume::MemberTarget*>& targets,
                             asio::io_context& io, WorkerPool* workers,
                             std::unique_ptr<integrity::ChecksummedVolume>* out) {
  integrity::ChecksumOptions options;
  options.table_cache_bytes = config.table_cache;
  options.state_dir = config.state_dir;
  options.workers = workers;
  options.background.limits = {.min_bytes_per_second = config.resync_rate_min,
                               .max_bytes_per_second = config.resync_rate_max};
  options.description = v.description;
  std::unique_ptr<integrity::ChecksummedVolume> volume;
  Status s;
  if (plan.redundant) {
    s = BuildRedundantVolume(io, *plan.redundant, targets, plan.key, options, v.auto_resync,
                             &volume);
  } else {
    std::vector<integrity::Superblock> superblocks;
    for (const auto& m : plan.members)
      superblocks.push_back(m.superblock);
    s = integrity::ChecksummedVolume::Create(io, targets, std::move(superblocks), plan.key, options,
                                             &volume)
            .Wrap("volume " + plan.members[0].superblock.name);
  }
  if (!plan.key.empty()) explicit_bzero(plan.key.data(), plan.key.size());
  DST_RETURN_IF_ERROR(s);
  LOG_INFO("volume %s: %s of data, table cache %s", volume->name().c_str(),
           FormatSize(volume->size()).c_str(), FormatSize(config.table_cache).c_str());
  *out = std::move(volume);
  return Status::Ok();
}

void InstallChecksummedVolume(const ServeConfig& config, const VolumeConfig& v,
                              const AssemblyPlan& plan,
                              const std::vector<volume::MemberTarget*>& targets,
                              std::unique_ptr<integrity::ChecksummedVolume> volume,
                              control::Server& server) {
  server.checksummed.push_back(volume.get());
  if (plan.redundant) {
    const SlotVolume slots = SlotsOf(config, *plan.redundant, *volume, server);
    if (v.auto_resync && server.returns) WatchForReturns(slots, *plan.redundant, server);
    if (server.adder) server.adder->AddVolume(slots);  // member add
  }
  // A member fenced out by a newer owner stops the volume's writes, before its I/O completes.
  if (plan.redundant)
    for (uint32_t slot = 0; slot < targets.size(); ++slot)
      if (auto* member = dynamic_cast<member::NbdMember*>(targets[slot]))
        member->OnSuperseded([v = volume.get(), slot] { v->Supersede(slot); });
  server.volumes.push_back(std::move(volume));
}

Status StageVolume(const VolumeConfig& v, const stagelog::Uuid& volume_uuid, asio::io_context& io,
                   std::unique_ptr<volume::BlockDevice>* volume, stagelog::StagedDevice** staged) {
  const std::string name = (*volume)->name();
  std::shared_ptr<stagelog::LogDevice> device;
  stagelog::ReplayedLog log;
  bool formatted = false;
  const stagelog::LogMode mode = v.log_mode == "write-through" ? stagelog::LogMode::kWriteThrough
                                                               : stagelog::LogMode::kWriteBack;
  DST_RETURN_IF_ERROR(
      stagelog::OpenVolumeLog(v.log_path, v.log_size, volume_uuid, mode, &device, &log, &formatted)
          .Wrap("volume " + name));
  const uint64_t pending = log.next_sequence - 1 > log.destaged_sequence()
                               ? log.next_sequence - 1 - log.destaged_sequence()
                               : 0;
  if (formatted)
    LOG_INFO("volume %s: staging log %s formatted for volume %s: %s ring, %s", name.c_str(),
             v.log_path.c_str(), integrity::FormatUuid(volume_uuid).c_str(),
             FormatSize(log.superblock.ring_size).c_str(),
             std::string(stagelog::LogModeName(mode)).c_str());
  else if (mode == stagelog::LogMode::kWriteThrough)
    // Nothing to destage: the members have every acknowledged write.
    LOG_INFO(
        "volume %s: staging log %s replayed: %zu records, head %llu, write-through: snapshots "
        "from %llu (%s)",
        name.c_str(), v.log_path.c_str(), log.records.size(),
        static_cast<unsigned long long>(log.next_sequence - 1),
        static_cast<unsigned long long>(log.superblock.oldest_sequence - 1), log.end.c_str());
  else
    LOG_INFO(
        "volume %s: staging log %s replayed: %zu records, head %llu, destaged %llu, %llu to "
        "destage (%s)",
        name.c_str(), v.log_path.c_str(), log.records.size(),
        static_cast<unsigned long long>(log.next_sequence - 1),
        static_cast<unsigned long long>(log.destaged_sequence()),
        static_cast<unsigned long long>(pending), log.end.c_str());
  stagelog::StagedOptions options;
  options.path = v.log_path;
  options.retain = v.log_retain;
  std::unique_ptr<stagelog::StagedDevice> out;
  DST_RETURN_IF_ERROR(stagelog::StagedDevice::Open(io, std::move(*volume), std::move(device), log,
                                                   std::move(options), &out)
                          .Wrap("volume " + name));
  *staged = out.get();
  *volume = std::move(out);
  return Status::Ok();
}

}  // namespace dst::aggregator
