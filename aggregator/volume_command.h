// `dst-aggregator volume [--control PATH] list [--json]` and
// `dst-aggregator volume [--control PATH] remove NAME [--force]` and
// `dst-aggregator volume [--control PATH] add NAME URI... [--raw] [--layout L] [--chunk C] ...`:
// asks a running aggregator over its control socket for its volumes, one line each (name, layout,
// size, clients connected, state), to remove one while the others serve, or to serve a new one
// (docs/operations.md, "Volume commands"). list prints the lines; remove prints the aggregator's
// "ok: ..." line once the volume is closed and its members released, add once a client can
// connect to the new volume. All exit 1 with the error (or why the aggregator could not be asked)
// on stderr.
//
// `dst-aggregator volume remove NAME --cluster URL [--force]` removes a volume from the cluster
// catalog instead, and frees its exports (cluster/catalog_remove.h): refused while a serve owns
// it or a create of it runs; --force also removes a "creating" record that names no create.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "aggregator/cluster/cluster_options.h"

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// How long `volume remove` waits for its answer: the volume's clients finish their requests in
// flight, then the volume writes its checksums back and its superblocks.
inline constexpr std::chrono::milliseconds kVolumeRemoveTimeout{300000};
// How long `volume add` waits: the members' superblocks are read and the volume opened (which
// recovers what a crash left dirty).
inline constexpr std::chrono::milliseconds kVolumeAddTimeout{300000};

struct VolumeArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // list, remove, add
  std::string name;     // remove, add: the volume
  bool json = false;    // list --json
  bool force = false;   // remove --force: end the volume's clients
  // add: the members (raw: in layout order) and the per-volume keys of the configuration file.
  std::vector<std::string> members;
  bool raw = false;
  std::string layout;  // raw: linear, stripe
  std::string chunk;   // raw: stripe chunk size
  std::string key_file;
  std::string passphrase_file;
  bool allow_degraded = false;
  bool no_auto_resync = false;
  std::string discard;           // mirror, raid10: a slot
  cluster::ClusterArgs cluster;  // remove --cluster: from the catalog
};

CLI::App* AddVolumeCommand(CLI::App& app, VolumeArgs* args);
// The control request the arguments make ("volume list json\n", "volume remove vol0 force\n",
// "volume add vol1 raw=true layout=stripe nbd://a/x nbd://b/x\n").
std::string VolumeRequest(const VolumeArgs& args);
int RunVolume(const VolumeArgs& args);

}  // namespace dst::aggregator
