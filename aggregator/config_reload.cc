#include "aggregator/config_reload.h"

#include <algorithm>
#include <set>

#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

namespace dst::aggregator {

namespace {

// Read by the connections at each request or handshake, or by the background jobs at each step:
// nothing built at start holds them.
constexpr std::string_view kLiveKeys[] = {
    "handshake-timeout",       "request-timeout", "max-connections-per-address",
    "max-inflight-per-client", "max-inflight",    "resync-rate-min",
    "resync-rate-max",
};

Status Parse(const std::string& text, toml::table* table) {
  toml::parse_result parsed = toml::parse(text);
  if (!parsed)
    return Status::Invalid("the configuration file no longer parses: " +
                           std::string(parsed.error().description()));
  *table = std::move(parsed.table());
  return Status::Ok();
}

std::set<std::string> KeysOf(const toml::table& a, const toml::table& b) {
  std::set<std::string> keys;
  for (const auto& [key, node] : a)
    keys.emplace(key.str());
  for (const auto& [key, node] : b)
    keys.emplace(key.str());
  return keys;
}

// "nbd://a/x nbd://b/x".
std::string Members(const VolumeConfig& v) {
  std::string text;
  for (const std::string& uri : v.members)
    text += (text.empty() ? "" : " ") + uri;
  return text;
}

// The served volume `v` is (or will be): its name, or for an unnamed one the volume its members
// belong to; "" for an unnamed volume none of whose members is served.
std::string ServedName(const VolumeConfig& v, const ServedVolumes& served) {
  if (!v.name.empty()) return v.name;
  for (const std::string& uri : v.members)
    if (auto it = served.member_volume.find(uri); it != served.member_volume.end())
      return it->second;
  return "";
}

// An assembled volume's members are in any order; a raw volume's in layout order.
std::vector<std::string> ComparableMembers(const VolumeConfig& v, bool default_raw) {
  std::vector<std::string> members = v.members;
  if (!v.IsRaw(default_raw)) std::sort(members.begin(), members.end());
  return members;
}

Status CheckGlobalKeys(const toml::table& running, const toml::table& next, ReloadPlan* plan) {
  for (const std::string& key : KeysOf(running, next)) {
    if (key == "volume" || running[key] == next[key]) continue;
    if (!IsLiveKey(key)) return Status::Invalid(key + " changed: needs a restart");
    plan->live_keys.push_back(key);
  }
  return Status::Ok();
}

// The [[volume]] tables of a file, in the order of its config's volumes.
std::vector<const toml::table*> VolumeTables(const toml::table& file) {
  std::vector<const toml::table*> tables;
  if (const toml::array* array = file["volume"].as_array())
    for (const toml::node& node : *array)
      tables.push_back(node.as_table());
  return tables;
}

Status CheckKeptVolume(const std::string& name, const toml::table& running,
                       const VolumeConfig& running_v, const LoadedConfig& running_file,
                       const toml::table& next, const VolumeConfig& next_v,
                       const LoadedConfig& next_file) {
  for (const std::string& key : KeysOf(running, next)) {
    const bool same = key == "members" ? ComparableMembers(running_v, running_file.config.raw) ==
                                             ComparableMembers(next_v, next_file.config.raw)
                                       : running[key] == next[key];
    if (!same) return Status::Invalid("volume " + name + ": " + key + " changed: needs a restart");
  }
  return Status::Ok();
}

}  // namespace

bool IsLiveKey(std::string_view key) {
  return std::find(std::begin(kLiveKeys), std::end(kLiveKeys), key) != std::end(kLiveKeys);
}

Status PlanReload(const LoadedConfig& running, const LoadedConfig& next,
                  const ServedVolumes& served, ReloadPlan* plan) {
  *plan = ReloadPlan();
  toml::table running_file;
  toml::table next_file;
  DST_RETURN_IF_ERROR(Parse(running.text, &running_file));
  DST_RETURN_IF_ERROR(Parse(next.text, &next_file));
  DST_RETURN_IF_ERROR(CheckGlobalKeys(running_file, next_file, plan));
  plan->rates_changed = running.config.resync_rate_min != next.config.resync_rate_min ||
                        running.config.resync_rate_max != next.config.resync_rate_max;

  // The volumes as last applied, by the name they are served under.
  const std::vector<const toml::table*> running_tables = VolumeTables(running_file);
  std::map<std::string, size_t> running_index;
  for (size_t i = 0; i < running.config.volumes.size() && i < running_tables.size(); ++i)
    if (const std::string name = ServedName(running.config.volumes[i], served); !name.empty())
      running_index.emplace(name, i);

  const std::vector<const toml::table*> next_tables = VolumeTables(next_file);
  const std::set<std::string> served_names(served.names.begin(), served.names.end());
  std::set<std::string> next_names;
  for (size_t i = 0; i < next.config.volumes.size() && i < next_tables.size(); ++i) {
    VolumeConfig v = next.config.volumes[i];
    const std::string name = ServedName(v, served);
    if (name.empty())
      return Status::Invalid("the volume with members " + Members(v) +
                             " has no name and is not served: give it a name to add it "
                             "while serving");
    if (!next_names.insert(name).second)
      return Status::Invalid("two [[volume]] tables are volume " + name);
    if (!served_names.count(name)) {
      v.name = name;
      plan->add.push_back(std::move(v));
      continue;
    }
    plan->kept.push_back(name);
    // A volume added with `volume add` has no table to compare with: the file's is taken as it.
    const auto was = running_index.find(name);
    if (was == running_index.end()) continue;
    DST_RETURN_IF_ERROR(CheckKeptVolume(name, *running_tables[was->second],
                                        running.config.volumes[was->second], running,
                                        *next_tables[i], next.config.volumes[i], next));
  }
  for (const std::string& name : served.names)
    if (!next_names.count(name)) plan->remove.push_back(name);

  // A new volume's members may belong only to volumes that leave.
  const std::set<std::string> leaving(plan->remove.begin(), plan->remove.end());
  for (const VolumeConfig& v : plan->add)
    for (const std::string& uri : v.members)
      if (auto it = served.member_volume.find(uri);
          it != served.member_volume.end() && !leaving.count(it->second))
        return Status::Invalid("volume " + v.name + ": " + uri + " is a member of volume " +
                               it->second + ", which stays");
  return Status::Ok();
}

}  // namespace dst::aggregator
