#include "aggregator/cluster/catalog_client.h"

namespace dst::cluster {

Status EtcdOptionsFor(const EtcdUrl& url, const EtcdTls& tls, std::chrono::milliseconds timeout,
                      EtcdClientOptions* options) {
  options->endpoints = url.endpoints;
  options->tls = url.tls;
  options->tls_files = tls;
  options->timeout = timeout;
  return Status::Ok();
}

CatalogClient::CatalogClient(EtcdUrl url, std::unique_ptr<EtcdClient> etcd)
    : url_(std::move(url)), keys_(url_.prefix), etcd_(std::move(etcd)) {}

Status CatalogClient::Open(const std::string& text, std::unique_ptr<CatalogClient>* out,
                           EtcdTls tls, std::chrono::milliseconds timeout) {
  EtcdUrl url;
  DST_RETURN_IF_ERROR(ParseEtcdUrl(text, &url).Wrap("--cluster"));
  EtcdClientOptions options;
  DST_RETURN_IF_ERROR(EtcdOptionsFor(url, tls, timeout, &options));
  std::unique_ptr<EtcdClient> etcd;
  DST_RETURN_IF_ERROR(EtcdClient::Create(std::move(options), &etcd));
  out->reset(new CatalogClient(std::move(url), std::move(etcd)));
  return Status::Ok();
}

Status CatalogClient::ListPrefix(const std::string& prefix, RangeResult* range) {
  return Run(etcd_->GetPrefix(prefix, range));
}

Status CatalogClient::ListExports(std::vector<Revisioned<ExportRecord>>* exports) {
  RangeResult range;
  DST_RETURN_IF_ERROR(ListPrefix(keys_.Exports(), &range));
  for (const KeyValue& kv : range.kvs) {
    Revisioned<ExportRecord> e;
    DST_RETURN_IF_ERROR(DecodeExport(kv.key, kv.value, &e.record));
    e.mod_revision = kv.mod_revision;
    exports->push_back(std::move(e));
  }
  return Status::Ok();
}

Status CatalogClient::ListVolumes(std::vector<Revisioned<VolumeRecord>>* volumes) {
  RangeResult range;
  DST_RETURN_IF_ERROR(ListPrefix(keys_.Volumes(), &range));
  for (const KeyValue& kv : range.kvs) {
    Revisioned<VolumeRecord> v;
    DST_RETURN_IF_ERROR(DecodeVolume(kv.key, kv.value, &v.record));
    v.mod_revision = kv.mod_revision;
    volumes->push_back(std::move(v));
  }
  return Status::Ok();
}

Status CatalogClient::ListOwners(std::vector<std::pair<std::string, OwnerRecord>>* owners) {
  RangeResult range;
  DST_RETURN_IF_ERROR(ListPrefix(keys_.Owners(), &range));
  for (const KeyValue& kv : range.kvs) {
    OwnerRecord o;
    DST_RETURN_IF_ERROR(DecodeOwner(kv.key, kv.value, &o));
    owners->emplace_back(kv.key.substr(keys_.Owners().size()), std::move(o));
  }
  return Status::Ok();
}

Status CatalogClient::GetVolume(const std::string& name, Revisioned<VolumeRecord>* volume) {
  std::optional<KeyValue> kv;
  DST_RETURN_IF_ERROR(Run(etcd_->Get(keys_.Volume(name), &kv)));
  if (!kv)
    return Status::Error(ENOENT, "volume " + name + " is not in the catalog at " + url_.ToString());
  volume->mod_revision = kv->mod_revision;
  return DecodeVolume(kv->key, kv->value, &volume->record);
}

Status CatalogClient::GetExport(const std::string& uri, Revisioned<ExportRecord>* record) {
  std::optional<KeyValue> kv;
  DST_RETURN_IF_ERROR(Run(etcd_->Get(keys_.Export(uri), &kv)));
  if (!kv)
    return Status::Error(ENOENT, "export " + uri + " is not registered at " + url_.ToString());
  record->mod_revision = kv->mod_revision;
  return DecodeExport(kv->key, kv->value, &record->record);
}

}  // namespace dst::cluster
