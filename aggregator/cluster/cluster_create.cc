#include "aggregator/cluster/cluster_create.h"

#include <charconv>
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "aggregator/cluster/catalog_client.h"
#include "aggregator/cluster/catalog_remove.h"
#include "aggregator/cluster/lease_renewer.h"
#include "aggregator/cluster/placement.h"
#include "aggregator/integrity/assembly.h"
#include "aggregator/integrity/member_format.h"
#include "aggregator/integrity/member_metadata.h"
#include "aggregator/volume/layout.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

using cluster::CatalogClient;
using cluster::ExportRecord;
using cluster::Revisioned;
using cluster::VolumeRecord;

struct Shape {
  std::string layout;
  uint32_t sets = 1;
  uint32_t copies = 2;
  uint64_t size = 0;  // 0: any
};

Status ParseCount(const std::string& option, const std::string& text, uint32_t* out) {
  const char* end = text.data() + text.size();
  const auto [at, ec] = std::from_chars(text.data(), end, *out);
  if (ec != std::errc() || at != end || *out == 0)
    return Status::Invalid(option + " " + text + ": not a positive number");
  return Status::Ok();
}

Status ParseShape(const CreateArgs& args, const ClusterCreateArgs& cluster, Shape* shape) {
  if (!args.members.empty())
    return Status::Invalid("create --cluster picks the members from the catalog: give no URIs");
  shape->layout = args.layout;
  if (args.layout != "mirror" && args.layout != "raid10")
    return Status::Invalid("create --cluster makes --layout mirror or raid10 volumes, not " +
                           args.layout);
  if (!args.copies.empty())
    DST_RETURN_IF_ERROR(ParseCount("--copies", args.copies, &shape->copies));
  if (args.layout == "raid10") {
    if (cluster.sets.empty())
      return Status::Invalid("create --cluster --layout raid10 needs --sets");
    DST_RETURN_IF_ERROR(ParseCount("--sets", cluster.sets, &shape->sets));
  } else if (!cluster.sets.empty()) {
    return Status::Invalid("--sets is for --layout raid10");
  }
  if (!cluster.size.empty()) {
    const auto size = ParseSize(cluster.size);
    if (!size || *size == 0) return Status::Invalid("--size " + cluster.size + ": not a size");
    shape->size = *size;
  }
  return Status::Ok();
}

// The format create will use, as far as the data area's size depends on it; create itself
// checks the options again (and refuses what is wrong with its own messages).
Status FormatFor(const CreateArgs& args, integrity::FormatParams* params) {
  const auto block = ParseSize(args.block_size);
  const auto region = ParseSize(args.region_size);
  const std::string name =
      !args.checksum.empty() ? args.checksum : (args.encrypt ? "blake2b-keyed" : "crc32c");
  const auto algorithm = ParseChecksumAlgorithm(name);
  if (!block || !region || !algorithm)
    return Status::Invalid("--block-size, --region-size or --checksum is not valid");
  params->block_size = static_cast<uint32_t>(*block);
  params->region_size = *region;
  params->algorithm = *algorithm;
  params->table_tags = *algorithm == ChecksumAlgorithm::kBlake2bKeyed;  // as create makes it
  return integrity::ValidateFormatParams(*params);
}

// The data bytes an export holds in this format (0: too small for one).
uint64_t Capacity(uint64_t export_size, const integrity::FormatParams& params) {
  integrity::MemberGeometry geometry;
  if (!integrity::ComputeGeometry(export_size, params, integrity::kFormatVersion2, &geometry).ok())
    return 0;
  return geometry.data.size;
}

// The least each set holds for a volume of `size`: a share of it, whole chunks for raid10.
uint64_t PerSet(const Shape& shape, const CreateArgs& args) {
  if (shape.size == 0) return 0;
  uint64_t per_set = (shape.size + shape.sets - 1) / shape.sets;
  if (shape.layout == "raid10") {
    const uint64_t chunk = args.chunk.empty()
                               ? volume::kDefaultChunkSize
                               : ParseSize(args.chunk).value_or(volume::kDefaultChunkSize);
    per_set = (per_set + chunk - 1) / chunk * chunk;
  }
  return per_set;
}

// "volume NAME exists in the catalog at URL", saying so when it is a leftover of a create that
// is gone.
Status Exists(CatalogClient& catalog, const cluster::KeyValue& kv) {
  VolumeRecord existing;
  DST_RETURN_IF_ERROR(cluster::DecodeVolume(kv.key, kv.value, &existing));
  std::string message =
      "volume " + existing.name + " exists in the catalog at " + catalog.url().ToString();
  cluster::Creator creator = cluster::Creator::kNone;
  if (cluster::FindCreator(catalog, existing, &creator).ok() && creator == cluster::Creator::kGone)
    message += " (left \"creating\" by a create that is gone: volume remove --cluster " +
               catalog.url().ToString() + " " + existing.name + " removes it)";
  return Status::Error(EEXIST, message);
}

// Records the volume "creating" and marks its exports used, if the name is free and the exports
// are as read; *revision: the record's mod_revision.
Status Reserve(CatalogClient& catalog, const VolumeRecord& volume,
               const std::vector<Revisioned<ExportRecord>>& chosen, int64_t* revision) {
  const auto& keys = catalog.keys();
  cluster::Txn txn;
  txn.compare.push_back(cluster::Compare::Absent(keys.Volume(volume.name)));
  txn.success.push_back(cluster::TxnOp::Put(keys.Volume(volume.name), EncodeVolume(volume)));
  for (const auto& e : chosen) {
    const std::string key = keys.Export(e.record.uri);
    txn.compare.push_back(
        cluster::Compare::ModRevision(key, cluster::Compare::kEqual, e.mod_revision));
    ExportRecord used = e.record;
    used.volume = volume.name;
    txn.success.push_back(cluster::TxnOp::Put(key, EncodeExport(used)));
  }
  txn.failure.push_back(cluster::TxnOp::Get(keys.Volume(volume.name)));
  cluster::TxnResult result;
  DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Commit(std::move(txn), &result)));
  if (result.succeeded) {
    *revision = result.revision;
    return Status::Ok();
  }
  if (!result.results.empty() && !result.results[0].kvs.empty())
    return Exists(catalog, result.results[0].kvs[0]);
  return Status::Error(EAGAIN,
                       "the exports placed for volume " + volume.name +
                           " changed in the catalog meanwhile (another create?): run create again");
}

// After a failed format: the exports freed and the volume's record gone, as before the create.
void Release(CatalogClient& catalog, const VolumeRecord& volume) {
  for (const std::string& uri : volume.members) {
    Revisioned<ExportRecord> e;
    if (!catalog.GetExport(uri, &e).ok() || e.record.volume != volume.name) continue;
    e.record.volume.clear();
    const Status s =
        catalog.Run(catalog.etcd().Put(catalog.keys().Export(uri), EncodeExport(e.record)));
    if (!s.ok()) LOG_WARNING("catalog: export %s: not freed: %s", uri.c_str(), s.message().c_str());
  }
  const Status s = catalog.Run(catalog.etcd().Delete(catalog.keys().Volume(volume.name)));
  if (!s.ok())
    LOG_WARNING("catalog: volume %s: record not removed: %s", volume.name.c_str(),
                s.message().c_str());
}

// The volume's record "ready", if it is still the one Reserve wrote.
Status Record(CatalogClient& catalog, const VolumeRecord& volume, int64_t reserved) {
  const std::string key = catalog.keys().Volume(volume.name);
  cluster::Txn txn;
  txn.compare.push_back(cluster::Compare::ModRevision(key, cluster::Compare::kEqual, reserved));
  txn.success.push_back(cluster::TxnOp::Put(key, EncodeVolume(volume)));
  cluster::TxnResult result;
  DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Commit(std::move(txn), &result)));
  if (!result.succeeded)
    return Status::Error(ESTALE, "volume " + volume.name +
                                     ": its record changed in the catalog while its members were "
                                     "formatted (removed as a leftover after this create's lease "
                                     "expired?): not recorded");
  return Status::Ok();
}

}  // namespace

void AddClusterCreateOptions(CLI::App& create, ClusterCreateArgs* args) {
  cluster::AddClusterOptions(create, &args->cluster,
                             "place the volume on free exports of the cluster catalog (no member "
                             "URIs) and record it there");
  create.add_option("--size", args->size,
                    "--cluster: the least the volume holds (default: the smallest free exports)");
  create.add_option("--sets", args->sets, "--cluster --layout raid10: the number of sets");
  create
      .add_option("--lease-ttl", args->lease_ttl,
                  "--cluster: seconds of the lease that shows this create alive while it formats "
                  "(default 10)")
      ->check(CLI::Range(2u, 3600u));
  create.get_option("members")->required(false);
}

Status CheckClusterCreateArgs(const ClusterCreateArgs& args) {
  if (!args.cluster.given() && (!args.size.empty() || !args.sets.empty() || args.lease_ttl != 0))
    return Status::Invalid("--size, --sets and --lease-ttl are for create --cluster");
  return cluster::CheckClusterArgs(args.cluster);
}

Status RunClusterCreate(CreateArgs args, const ClusterCreateArgs& cluster) {
  Shape shape;
  DST_RETURN_IF_ERROR(ParseShape(args, cluster, &shape));
  integrity::FormatParams params;
  DST_RETURN_IF_ERROR(FormatFor(args, &params));
  std::unique_ptr<CatalogClient> catalog;
  DST_RETURN_IF_ERROR(cluster::OpenCatalog(cluster.cluster, &catalog));

  // A name taken is said as such, before placement would say that its exports are not free.
  std::optional<cluster::KeyValue> existing;
  DST_RETURN_IF_ERROR(
      catalog->Run(catalog->etcd().Get(catalog->keys().Volume(args.name), &existing)));
  if (existing) return Exists(*catalog, *existing);

  std::vector<Revisioned<ExportRecord>> exports;
  DST_RETURN_IF_ERROR(catalog->ListExports(&exports));
  std::vector<cluster::PlacementExport> candidates;
  for (const auto& e : exports)
    candidates.push_back({e.record.uri, e.record.zone, Capacity(e.record.size, params),
                          e.record.drained, !e.record.volume.empty()});
  std::vector<std::string> uris;
  DST_RETURN_IF_ERROR(
      cluster::Place(candidates, {shape.sets, shape.copies, PerSet(shape, args)}, &uris)
          .Wrap("create --cluster: volume " + args.name));

  // The lease that shows this create alive, from before the reservation to the end.
  const auto ttl =
      std::chrono::seconds(cluster.lease_ttl != 0 ? cluster.lease_ttl : kCreateLeaseTtl);
  cluster::Lease lease;
  DST_RETURN_IF_ERROR(catalog->Run(catalog->etcd().GrantLease(ttl, &lease)).Wrap("create lease"));
  cluster::LeaseRenewer renewer;
  cluster::EtcdClientOptions options;
  // Each renewal bounded by the interval between two: a late one is of no use.
  const auto granted = std::chrono::seconds(lease.ttl);
  DST_RETURN_IF_ERROR(cluster::EtcdOptionsFor(catalog->url(), cluster.cluster.tls,
                                              cluster::LeaseRenewer::Interval(granted), &options));
  DST_RETURN_IF_ERROR(renewer.Start(std::move(options), lease.id, granted));
  // Ends the lease, which nothing is attached to, whatever the outcome.
  struct Revoke {
    CatalogClient& catalog;
    cluster::LeaseRenewer& renewer;
    int64_t id;
    ~Revoke() {
      renewer.Stop();
      (void)catalog.Run(catalog.etcd().RevokeLease(id));
    }
  } revoke{*catalog, renewer, lease.id};

  VolumeRecord volume;
  volume.name = args.name;
  volume.creator_lease = lease.id;
  volume.layout = shape.layout;
  volume.copies = shape.copies;
  volume.members = uris;
  volume.created = cluster::SecondsSinceEpoch();
  std::vector<Revisioned<ExportRecord>> chosen;
  for (const std::string& uri : uris)
    for (const auto& e : exports)
      if (e.record.uri == uri) chosen.push_back(e);
  int64_t reserved = 0;
  DST_RETURN_IF_ERROR(Reserve(*catalog, volume, chosen, &reserved));

  args.members = uris;
  args.copies = std::to_string(shape.copies);
  Status s = RunCreate(args);
  integrity::MemberReadResult back;
  if (s.ok()) s = integrity::ReadSuperblocks(uris.front(), args.tls, &back);
  if (s.ok()) s = back.choice_status;
  if (!s.ok()) {
    Release(*catalog, volume);
    return s;
  }
  volume.uuid = integrity::FormatUuid(back.choice.superblock.volume_uuid);
  volume.size = back.choice.superblock.volume_size;
  volume.state = "ready";
  volume.creator_lease = 0;
  DST_RETURN_IF_ERROR(Record(*catalog, volume, reserved));
  std::printf("catalog:  volume %s recorded at %s\n", volume.name.c_str(),
              catalog->url().ToString().c_str());
  std::fflush(stdout);
  return Status::Ok();
}

}  // namespace dst::aggregator
