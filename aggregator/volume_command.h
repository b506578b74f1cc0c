// `dst-aggregator volume [--control PATH] list [--json]` and
// `dst-aggregator volume [--control PATH] remove NAME [--force]`: asks a running aggregator over
// its control socket for its volumes, one line each (name, layout, size, clients connected,
// state), or to remove one while the others serve (docs/operations.md, "Volume commands").
// list prints the lines; remove prints the aggregator's "ok: ..." line once the volume is closed
// and its members released. Both exit 1 with the error (or why the aggregator could not be
// asked) on stderr.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <chrono>
#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

// How long `volume remove` waits for its answer: the volume's clients finish their requests in
// flight, then the volume writes its checksums back and its superblocks.
inline constexpr std::chrono::milliseconds kVolumeRemoveTimeout{300000};

struct VolumeArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // list, remove
  std::string name;     // remove: the volume
  bool json = false;    // list --json
  bool force = false;   // remove --force: end the volume's clients
};

CLI::App* AddVolumeCommand(CLI::App& app, VolumeArgs* args);
// The control request the arguments make ("volume list json\n", "volume remove vol0 force\n").
std::string VolumeRequest(const VolumeArgs& args);
int RunVolume(const VolumeArgs& args);

}  // namespace dst::aggregator
