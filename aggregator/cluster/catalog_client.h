// CatalogClient: the catalog (catalog.h) read and written from a blocking caller, for the
// one-shot commands (export, create --cluster, status --cluster): each call runs its etcd
// requests to completion on the client's own event loop (RunEtcdCall).
//
// Threading: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "aggregator/cluster/catalog.h"
#include "aggregator/cluster/etcd_client.h"
#include "aggregator/cluster/etcd_url.h"
#include "common/status.h"

namespace dst::cluster {

// A record with the revision it was read at, for a compare-and-swap.
template <typename Record>
struct Revisioned {
  Record record;
  int64_t mod_revision = 0;
};

// EtcdClientOptions for `url` (plain or TLS, TLS files from `tls`) with `timeout` per request.
Status EtcdOptionsFor(const EtcdUrl& url, const EtcdTls& tls, std::chrono::milliseconds timeout,
                      EtcdClientOptions* options);

class CatalogClient {
 public:
  // Parses the cluster URL and makes the client (nothing is contacted yet).
  static Status Open(const std::string& url, std::unique_ptr<CatalogClient>* out, EtcdTls tls = {},
                     std::chrono::milliseconds timeout = std::chrono::seconds(5));

  EtcdClient& etcd() { return *etcd_; }
  const CatalogKeys& keys() const { return keys_; }
  const EtcdUrl& url() const { return url_; }
  Status Run(asio::awaitable<Status> call) { return RunEtcdCall(io_, std::move(call)); }

  Status ListExports(std::vector<Revisioned<ExportRecord>>* exports);
  Status ListVolumes(std::vector<Revisioned<VolumeRecord>>* volumes);
  Status ListOwners(std::vector<std::pair<std::string, OwnerRecord>>* owners);  // by volume
  // ENOENT "volume NAME is not in the catalog at URL".
  Status GetVolume(const std::string& name, Revisioned<VolumeRecord>* volume);
  Status GetExport(const std::string& uri, Revisioned<ExportRecord>* record);

 private:
  CatalogClient(EtcdUrl url, std::unique_ptr<EtcdClient> etcd);
  Status ListPrefix(const std::string& prefix, RangeResult* range);

  asio::io_context io_;
  EtcdUrl url_;
  CatalogKeys keys_;
  std::unique_ptr<EtcdClient> etcd_;
};

}  // namespace dst::cluster
