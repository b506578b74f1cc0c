// What a reload of the configuration file changes (docs/operations.md, "Reload"): the difference
// between the file as last applied and the file now, against the volumes served. Pure: nothing
// is touched here; ConfigReloader (config_reloader.h) checks the rest and applies the plan.
//
// Keys are compared as the file writes them (TOML values), so a key that is added to the file,
// dropped from it or given another value has changed. Top-level keys: only the live ones
// (IsLiveKey) may change. [[volume]] tables: a volume that stays may change no key (the members
// of an assembled volume may change order); one that is new is added, a served one that is not in
// the file is removed. A volume is known by its name; a [[volume]] without one (an assembled
// volume named by its superblocks) by the served volume its members belong to.
//
// Threading: pure functions.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "aggregator/serve_config.h"
#include "common/status.h"

namespace dst::aggregator {

// The top-level keys a reload applies while serving: the client limits and timeouts that are
// read per request or per connection, and the background rates.
bool IsLiveKey(std::string_view key);

// A configuration as its file gave it: the text (keys compared) and what it makes, validated.
struct LoadedConfig {
  std::string text;
  ServeConfig config;
};

// The volumes served now.
struct ServedVolumes {
  std::vector<std::string> names;
  // Member URI -> the volume it is a member of (one that is out and may come back included).
  std::map<std::string, std::string> member_volume;
};

struct ReloadPlan {
  std::vector<std::string> remove;     // served, no longer in the file
  std::vector<VolumeConfig> add;       // in the file, not served; named
  std::vector<std::string> live_keys;  // top-level keys whose value changes, all live
  std::vector<std::string> kept;       // served and still in the file
  bool rates_changed = false;          // resync-rate-min or -max: applies to every kept volume
};

// The plan that takes what is served under `running` to `next`; the refusal names the key (and
// the volume) that needs a restart, or the volume that cannot be told apart.
Status PlanReload(const LoadedConfig& running, const LoadedConfig& next,
                  const ServedVolumes& served, ReloadPlan* plan);

}  // namespace dst::aggregator
