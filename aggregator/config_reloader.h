// ConfigReloader: SIGHUP and `dst-aggregator reload` in a running `serve --config FILE`
// (docs/operations.md, "Reload"): the file is read again and what changed is applied.
//
// The steps:
//   1. the file read and checked as at start (ServeConfigFromArgs, ValidateServeConfig), and the
//      plan made against what is served (PlanReload, config_reload.h);
//   2. refused, before anything changes: a file that does not load or validate, a change that
//      needs a restart (the key, and the volume), a volume being removed (`volume remove`), a
//      volume that leaves while clients are connected to it (a reload never ends them), a new
//      volume whose member serves a volume that stays, a reload already under way;
//   3. the live keys applied at once (IsLiveKey: client limits and timeouts, background rates to
//      every volume that stays), and `volume add` given the new settings;
//   4. the volumes that leave removed as `volume remove` removes them (without force);
//   5. once they are gone, the new volumes added as `volume add` adds them.
// Steps 4 and 5 talk to members: one that fails (a member unreachable, a volume that does not
// open) is reported in the answer and the log, and the rest stays applied; the next reload
// tries again what is still missing, since the plan is made against what is served.
// `done` hears "1 added, 1 removed, 2 changed" (changed: volumes given new background rates),
// or the refusal, or "reload applied in part (...): " with what failed.
//
// Threading: every call on the event loop's thread (Stop() once the loop has stopped).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "aggregator/config_reload.h"
#include "aggregator/control/runtime.h"
#include "aggregator/serve_args.h"
#include "common/lifetime.h"
#include "common/status.h"

namespace dst::aggregator {

class ConfigReloader {
 public:
  using Done = std::function<void(Status, const std::string& summary)>;

  // `args`: serve's command line (no --config: nothing to reload); `running`: the configuration
  // serve started with, whose file is read back now to be compared with later.
  ConfigReloader(control::Server& server, ServeArgs args, ServeConfig running);
  ConfigReloader(const ConfigReloader&) = delete;
  ConfigReloader& operator=(const ConfigReloader&) = delete;

  // Logs "reload refused: REASON", "reloaded: ..." or "reload applied in part: ...".
  void Reload(Done done);
  void Stop();

 private:
  struct Outcome;
  Status Load(LoadedConfig* next) const;
  ServedVolumes Served(const ServeConfig& next) const;
  // Why the plan cannot be applied now (Ok: it can).
  Status CheckServed(const ReloadPlan& plan) const;
  // Step 3; the number of volumes given new rates.
  size_t ApplyLive(const ServeConfig& next, const ReloadPlan& plan);
  void RemoveVolumes(std::shared_ptr<Outcome> outcome);
  void AddVolumes(std::shared_ptr<Outcome> outcome);
  void Finish(const Outcome& outcome);

  control::Server& server_;
  const ServeArgs args_;
  LoadedConfig running_;
  Status running_read_;  // why the file as started could not be read back
  bool busy_ = false;
  bool stopped_ = false;
  Lifetime lifetime_;  // last: expires first
};

}  // namespace dst::aggregator
