#include "aggregator/cluster/cluster_options.h"

#include <CLI/CLI.hpp>

namespace dst::cluster {

CLI::Option* AddClusterOptions(CLI::App& command, ClusterArgs* args, const std::string& what) {
  CLI::Option* url =
      command.add_option("--cluster", args->url, "etcd[s]://HOST[:PORT][,...]/PREFIX: " + what);
  command.add_option("--etcd-cacert", args->tls.ca_file,
                     "--cluster etcds://: the CA file that signed etcd's certificates (default: "
                     "the system's trusted CAs)");
  command.add_option("--etcd-cert", args->tls.cert_file,
                     "--cluster etcds://: a client certificate for etcd (--client-cert-auth)");
  command.add_option("--etcd-key", args->tls.key_file,
                     "--cluster etcds://: the key of --etcd-cert");
  return url;
}

Status CheckClusterArgs(const ClusterArgs& args) {
  const EtcdTls& tls = args.tls;
  if (!args.given() && (!tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty()))
    return Status::Invalid("--etcd-cacert, --etcd-cert and --etcd-key are for --cluster etcds://");
  if (tls.cert_file.empty() != tls.key_file.empty())
    return Status::Invalid("--etcd-cert and --etcd-key go together");
  return Status::Ok();
}

Status OpenCatalog(const ClusterArgs& args, std::unique_ptr<CatalogClient>* out,
                   std::chrono::milliseconds timeout) {
  DST_RETURN_IF_ERROR(CheckClusterArgs(args));
  return CatalogClient::Open(args.url, out, args.tls, timeout);
}

}  // namespace dst::cluster
