#include "aggregator/cluster/cluster_status.h"

#include <cstdio>
#include <map>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "aggregator/cluster/catalog_client.h"
#include "aggregator/command_error.h"
#include "common/units.h"

namespace dst::aggregator {

namespace {

std::string JoinUris(const std::vector<std::string>& uris) {
  std::string out;
  for (const std::string& uri : uris)
    out += (out.empty() ? "" : ",") + uri;
  return out;
}

// "host-a (pid 4242) at 10.0.0.1:10809", or without " at ..." when it advertises no address.
std::string DescribeOwnerAt(const cluster::OwnerRecord& owner) {
  return cluster::DescribeOwner(owner) + (owner.nbd.empty() ? "" : " at " + owner.nbd);
}

}  // namespace

void AddClusterStatusOption(CLI::App& status, cluster::ClusterArgs* cluster) {
  cluster::AddClusterOptions(status, cluster,
                             "the catalog's volumes and their owners, instead of one aggregator's "
                             "status");
}

int RunClusterStatus(const cluster::ClusterArgs& url, bool json) {
  std::unique_ptr<cluster::CatalogClient> catalog;
  if (Status s = cluster::OpenCatalog(url, &catalog); !s.ok()) return ExitWithError(s);
  std::vector<cluster::Revisioned<cluster::VolumeRecord>> volumes;
  std::vector<std::pair<std::string, cluster::OwnerRecord>> owner_list;
  Status s = catalog->ListVolumes(&volumes);
  if (s.ok()) s = catalog->ListOwners(&owner_list);
  if (!s.ok()) return ExitWithError(s);
  const std::map<std::string, cluster::OwnerRecord> owners(owner_list.begin(), owner_list.end());
  nlohmann::json list = nlohmann::json::array();
  for (const auto& v : volumes) {
    const auto owner = owners.find(v.record.name);
    if (json) {
      nlohmann::json j = nlohmann::json::parse(cluster::EncodeVolume(v.record));
      j["owner"] = owner == owners.end() ? nlohmann::json(nullptr)
                                         : nlohmann::json::parse(EncodeOwner(owner->second));
      list.push_back(std::move(j));
      continue;
    }
    std::printf("%s layout=%s copies=%u size=%s state=%s owner=%s members=%s\n",
                v.record.name.c_str(), v.record.layout.c_str(), v.record.copies,
                FormatSize(v.record.size).c_str(), v.record.state.c_str(),
                owner == owners.end() ? "none" : DescribeOwnerAt(owner->second).c_str(),
                JoinUris(v.record.members).c_str());
  }
  if (json) std::printf("%s\n", list.dump(2).c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace dst::aggregator
