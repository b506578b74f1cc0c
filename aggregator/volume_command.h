// `dst-aggregator volume [--control PATH] list [--json]`: asks a running aggregator over its
// control socket for its volumes, one line each (name, layout, size, clients connected, state;
// docs/operations.md, "Volume commands"), and prints them; exits 1 with the error (or why it
// could not be asked) on stderr.
//
// Threading: blocking, on the calling thread.
#pragma once

#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace dst::aggregator {

struct VolumeArgs {
  std::string control;  // "" for DefaultControlPath()
  std::string action;   // list
  bool json = false;    // list --json
};

CLI::App* AddVolumeCommand(CLI::App& app, VolumeArgs* args);
// The control request the arguments make ("volume list json\n").
std::string VolumeRequest(const VolumeArgs& args);
int RunVolume(const VolumeArgs& args);

}  // namespace dst::aggregator
