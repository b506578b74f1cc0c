// The options of every command that reaches the cluster catalog (docs/cluster.md): export,
// create, serve, status, map and volume remove.
//
//   --cluster etcd[s]://HOST[:PORT][,HOST[:PORT]...]/PREFIX
//   --etcd-cacert FILE   the CA that signed etcd's certificates (etcds://; default: the system's)
//   --etcd-cert FILE     a client certificate, for etcd's --client-cert-auth
//   --etcd-key FILE      its key
//
// Threading: the calling thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "aggregator/cluster/catalog_client.h"
#include "aggregator/cluster/etcd_client.h"
#include "common/status.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace dst::cluster {

struct ClusterArgs {
  std::string url;  // empty: no --cluster
  EtcdTls tls;

  bool given() const { return !url.empty(); }
};

// Adds --cluster (described by `what`) and the --etcd-* options to `command`; returns --cluster.
CLI::Option* AddClusterOptions(CLI::App& command, ClusterArgs* args, const std::string& what);
// EINVAL when --etcd-* options come without --cluster (the catalog's own checks refuse them with
// an etcd:// URL, and unreadable files, when it is opened).
Status CheckClusterArgs(const ClusterArgs& args);
// CatalogClient::Open with the URL and TLS files of `args`.
Status OpenCatalog(const ClusterArgs& args, std::unique_ptr<CatalogClient>* out,
                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace dst::cluster
