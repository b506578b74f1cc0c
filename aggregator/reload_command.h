// `dst-aggregator reload [--control PATH]`: asks a running aggregator to read its configuration
// file again and apply what changed (docs/operations.md, "Reload"), as SIGHUP does. Prints the
// aggregator's "ok: reloaded: N added, M removed, K changed" once the volumes are added and
// removed; exits 1 with the refusal (or why the aggregator could not be asked) on stderr.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// How long the answer may take: volumes are removed (their checksums written back) and added
// (their members read and the volumes opened), as `volume remove` and `volume add` wait.
inline constexpr std::chrono::milliseconds kReloadTimeout{300000};

struct ReloadArgs {
  std::string control;  // "" for DefaultControlPath()
};

CLI::App* AddReloadCommand(CLI::App& app, ReloadArgs* args);
int RunReload(const ReloadArgs& args);

}  // namespace dst::aggregator
