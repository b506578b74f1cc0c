#include "aggregator/cluster/cluster_options.h"

#include <doctest/doctest.h>
#include <algorithm>

#include <CLI/CLI.hpp>

namespace dst::cluster::cluster_options_test {
namespace {

// Parses `argv` as a command with the cluster options.
ClusterArgs Parse(std::vector<std::string> argv) {
  CLI::App app;
  ClusterArgs args;
  AddClusterOptions(app, &args, "the catalog");
  std::reverse(argv.begin(), argv.end());  // CLI11 takes them last first
  app.parse(argv);
  return args;
}

TEST_CASE("--cluster and the --etcd-* options") {
  ClusterArgs args = Parse({"--cluster", "etcds://e1,e2:2380/dst", "--etcd-cacert", "ca.pem",
                            "--etcd-cert", "c.pem", "--etcd-key", "k.pem"});
  CHECK(args.given());
  CHECK(args.url == "etcds://e1,e2:2380/dst");
  CHECK(args.tls.ca_file == "ca.pem");
  CHECK(args.tls.cert_file == "c.pem");
  CHECK(args.tls.key_file == "k.pem");
  CHECK(CheckClusterArgs(args).ok());
  CHECK(CheckClusterArgs(Parse({})).ok());

  Status s = CheckClusterArgs(Parse({"--etcd-cacert", "ca.pem"}));
  CHECK(s.err() == EINVAL);
  CHECK(s.message() == "--etcd-cacert, --etcd-cert and --etcd-key are for --cluster etcds://");
  s = CheckClusterArgs(Parse({"--cluster", "etcds://e1/dst", "--etcd-cert", "c.pem"}));
  CHECK(s.message() == "--etcd-cert and --etcd-key go together");

  // The client refuses TLS files with a plain URL, and unreadable files, when it is made.
  std::unique_ptr<CatalogClient> catalog;
  s = OpenCatalog(Parse({"--cluster", "etcd://e1/dst", "--etcd-cacert", "ca.pem"}), &catalog);
  CHECK(s.message() == "etcd TLS files given for a plain etcd:// URL (use etcds://)");
  s = OpenCatalog(Parse({"--cluster", "etcds://e1/dst", "--etcd-cacert", "/nonexistent/ca.pem"}),
                  &catalog);
  CHECK(s.err() == EINVAL);
  CHECK(s.message().rfind("etcd TLS CA file /nonexistent/ca.pem: ", 0) == 0);
}

}  // namespace
}  // namespace dst::cluster::cluster_options_test
