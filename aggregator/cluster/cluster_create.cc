#include "aggregator/cluster/cluster_create.h"

#include <charconv>
#include <chrono>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "aggregator/cluster/catalog_client.h"
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

uint64_t SecondsSinceEpoch() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// Records the volume "creating" and marks its exports used, if the name is free and the exports
// are as read.
Status Reserve(CatalogClient& catalog, const VolumeRecord& volume,
               const std::vector<Revisioned<ExportRecord>>& chosen) {
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
  if (result.succeeded) return Status::Ok();
  if (!result.results.empty() && !result.results[0].kvs.empty())
    return Status::Error(
        EEXIST, "volume " + volume.name + " exists in the catalog at " + catalog.url().ToString());
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

}  // namespace

void AddClusterCreateOptions(CLI::App& create, ClusterCreateArgs* args) {
  cluster::AddClusterOptions(create, &args->cluster,
                             "place the volume on free exports of the cluster catalog (no member "
                             "URIs) and record it there");
  create.add_option("--size", args->size,
                    "--cluster: the least the volume holds (default: the smallest free exports)");
  create.add_option("--sets", args->sets, "--cluster --layout raid10: the number of sets");
  create.get_option("members")->required(false);
}

Status CheckClusterCreateArgs(const ClusterCreateArgs& args) {
  if (!args.cluster.given() && (!args.size.empty() || !args.sets.empty()))
    return Status::Invalid("--size and --sets are for create --cluster");
  return cluster::CheckClusterArgs(args.cluster);
}

Status RunClusterCreate(CreateArgs args, const ClusterCreateArgs& cluster) {
  Shape shape;
  DST_RETURN_IF_ERROR(ParseShape(args, cluster, &shape));
  integrity::FormatParams params;
  DST_RETURN_IF_ERROR(FormatFor(args, &params));
  std::unique_ptr<CatalogClient> catalog;
  DST_RETURN_IF_ERROR(cluster::OpenCatalog(cluster.cluster, &catalog));

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

  VolumeRecord volume;
  volume.name = args.name;
  volume.layout = shape.layout;
  volume.copies = shape.copies;
  volume.members = uris;
  volume.created = SecondsSinceEpoch();
  std::vector<Revisioned<ExportRecord>> chosen;
  for (const std::string& uri : uris)
    for (const auto& e : exports)
      if (e.record.uri == uri) chosen.push_back(e);
  DST_RETURN_IF_ERROR(Reserve(*catalog, volume, chosen));

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
  DST_RETURN_IF_ERROR(
      catalog->Run(catalog->etcd().Put(catalog->keys().Volume(volume.name), EncodeVolume(volume))));
  std::printf("catalog:  volume %s recorded at %s\n", volume.name.c_str(),
              catalog->url().ToString().c_str());
  std::fflush(stdout);
  return Status::Ok();
}

}  // namespace dst::aggregator
