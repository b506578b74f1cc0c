#include "aggregator/cluster/catalog_remove.h"

#include <algorithm>
#include <cerrno>

namespace dst::cluster {

namespace {

// How often a removal reads the catalog again when it changed between the read and the write.
constexpr int kRemoveAttempts = 5;

// Why `volume` may not be removed now (Ok: it may).
Status CheckRemovable(CatalogClient& catalog, const VolumeRecord& volume, bool force) {
  const std::string& name = volume.name;
  std::optional<KeyValue> owner_kv;
  DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Get(catalog.keys().Owner(name), &owner_kv)));
  if (owner_kv) {
    OwnerRecord owner;
    DST_RETURN_IF_ERROR(DecodeOwner(owner_kv->key, owner_kv->value, &owner));
    return Status::Error(EBUSY, "volume " + name + " is owned by " + DescribeOwner(owner) +
                                    ": stop its serve first (a dead owner's record goes with its "
                                    "lease, one lease TTL after it died)");
  }
  Creator creator = Creator::kNone;
  DST_RETURN_IF_ERROR(FindCreator(catalog, volume, &creator));
  if (creator == Creator::kAlive)
    return Status::Error(EBUSY, "volume " + name + " is being created (its create's lease " +
                                    std::to_string(volume.creator_lease) +
                                    " is alive): not removing it");
  if (creator == Creator::kUnknown && !force)
    return Status::Error(EBUSY, "volume " + name +
                                    " is being created and its record names no create lease: "
                                    "--force removes it (when no create of it runs)");
  return Status::Ok();
}

}  // namespace

Status FindCreator(CatalogClient& catalog, const VolumeRecord& volume, Creator* creator) {
  if (volume.state == "ready") {
    *creator = Creator::kNone;
    return Status::Ok();
  }
  if (volume.creator_lease == 0) {
    *creator = Creator::kUnknown;
    return Status::Ok();
  }
  LeaseTtl ttl;
  const Status s = catalog.Run(catalog.etcd().LeaseTimeToLive(volume.creator_lease, &ttl));
  if (s.err() == ENOENT) {  // expired or revoked
    *creator = Creator::kGone;
    return Status::Ok();
  }
  DST_RETURN_IF_ERROR(s);
  *creator = Creator::kAlive;
  return Status::Ok();
}

Status RemoveVolume(CatalogClient& catalog, const std::string& name, bool force,
                    RemovedVolume* removed) {
  const CatalogKeys& keys = catalog.keys();
  for (int attempt = 0; attempt < kRemoveAttempts; ++attempt) {
    Revisioned<VolumeRecord> volume;
    DST_RETURN_IF_ERROR(catalog.GetVolume(name, &volume));
    DST_RETURN_IF_ERROR(CheckRemovable(catalog, volume.record, force));
    std::vector<Revisioned<ExportRecord>> exports;
    DST_RETURN_IF_ERROR(catalog.ListExports(&exports));

    Txn txn;
    txn.compare.push_back(
        Compare::ModRevision(keys.Volume(name), Compare::kEqual, volume.mod_revision));
    // A serve that took the lock meanwhile keeps the volume.
    txn.compare.push_back(Compare::Absent(keys.Owner(name)));
    txn.success.push_back(TxnOp::Delete(keys.Volume(name)));
    std::vector<std::string> freed;
    for (const auto& e : exports) {
      if (e.record.volume != name) continue;
      const std::string key = keys.Export(e.record.uri);
      txn.compare.push_back(Compare::ModRevision(key, Compare::kEqual, e.mod_revision));
      ExportRecord free = e.record;
      free.volume.clear();
      txn.success.push_back(TxnOp::Put(key, EncodeExport(free)));
      freed.push_back(e.record.uri);
    }
    TxnResult result;
    DST_RETURN_IF_ERROR(catalog.Run(catalog.etcd().Commit(std::move(txn), &result)));
    if (result.succeeded) {
      // In layout order, as the volume lists them.
      const std::vector<std::string>& members = volume.record.members;
      auto position = [&members](const std::string& uri) {
        return std::find(members.begin(), members.end(), uri) - members.begin();
      };
      std::stable_sort(freed.begin(), freed.end(), [&](const std::string& x, const std::string& y) {
        return position(x) < position(y);
      });
      removed->record = std::move(volume.record);
      removed->freed = std::move(freed);
      return Status::Ok();
    }
  }
  return Status::Error(EAGAIN, "volume " + name +
                                   " keeps changing in the catalog (a serve or create of it?): "
                                   "remove it again");
}

}  // namespace dst::cluster
